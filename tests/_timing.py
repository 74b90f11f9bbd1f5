"""Time bounds for tests of time limits, independent of the machine's load.

A test of a time limit asserts that the limit stopped the search (``termination ==
"time_limit"`` in the result, and that the search did not finish), not how fast the machine
was: a measured allowance races the load of other processes (a test on an idle 2-core VM
allowed 3.77 s of overshoot and took 5.75 s while the test suite ran beside another job).
Promptness (the search stops at the first deadline check after the limit) is tested with a
controlled clock (``test_bounded_search.py::test_search_stops_at_the_first_check_past_the_deadline``).
Wall time is bounded only generously, against a search that ignores its limit.
"""

from __future__ import annotations

GENEROUS_OVERSHOOT_S = 60.0
"""Seconds a solve may run past its time limit in a test.  One search block plus the
verification takes ~1 s on an idle 2-core VM and ~3 s under a load average of 6 (measured);
60 s leaves a twentyfold margin for a busier machine.  A search that ignores its limit runs
for minutes on the instances these tests use (the head-and-neck 180-day case scores ~1 % of
its schedules in 3 s), so the bound still fails such a search."""
