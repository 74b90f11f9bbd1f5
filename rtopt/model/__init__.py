"""The model: radiobiology, the tumour-microenvironment surrogate, its parameters, the simulator,
calibration and parameter uncertainty.

The one statement of the science.  Imports only :mod:`rtopt.common`; never a problem, a
back-end or an output.
"""
