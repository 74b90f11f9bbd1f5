"""Lowest layer: the typed errors and the safe file helpers every other layer uses.

Imports nothing else from rtopt.
"""
