"""Benchmarks: ``python -m bench NAME``. Each prints a summary and, last, one JSON line.

They measure diego against this machine's own limit in the same run, so a figure
is a ratio that holds on a noisy machine. They are not tests: nothing here runs
in the test command.
"""
