"""Lowest layer: the typed errors, the safe file helpers and the consoles every other layer uses.

Imports nothing else from rtopt.
"""
