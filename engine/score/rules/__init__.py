"""Deterministic scoring stages: sentence splitting, marker extraction, canonicalization,
rule-based correctness and token-probability confidence.

Importing this package is cheap: each stage module imports its own dependencies.
"""
