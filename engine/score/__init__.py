"""Scoring: a stored run -> sentences, markers, confidence, correctness and decisiveness tables.

Importing this package is cheap: each stage imports its own dependencies.
"""
