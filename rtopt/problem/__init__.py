"""The clinical problem: instance files, the treatment calendar, plans, constraints and their
verification (:class:`rtopt.problem.problem.Problem`), course records for adaptation.

Uses :mod:`rtopt.model`; knows nothing of back-ends.
"""
