"""A researcher's tools around a run: evaluate, export, convert the official checkpoints.

This package sits above ``models``, ``data`` and the training module and below the command
line: it may import them; only ``nlrepro.cli`` imports it.
"""
