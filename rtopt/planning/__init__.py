"""One solve: a solver profile picks a back-end, the plan it returns is verified, and a
:class:`rtopt.planning.solve.Result` is made.

Uses the problem, the model and the back-ends.
"""
