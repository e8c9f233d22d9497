"""Argument checks shared by the bootstrap modules: one clear ``UserError`` naming the option."""

from __future__ import annotations

import numbers

import numpy as np

from engine.errors import UserError

SCHEMES: tuple[str, ...] = ("poisson", "multinomial")
METHODS: tuple[str, ...] = ("bca", "percentile")


def check_n_boot(n_boot: object) -> int:
    """A non-negative integer number of bootstrap replicates (0 disables the bootstrap)."""
    if isinstance(n_boot, bool) or not isinstance(n_boot, numbers.Integral) or n_boot < 0:
        raise UserError(
            f"the number of bootstrap replicates (--bootstrap, n_boot=) must be a non-negative "
            f"integer, got {n_boot!r}",
            "give B, e.g. --bootstrap 1000, or 0 to disable the bootstrap",
        )
    return int(n_boot)


def check_level(level: object) -> float:
    """A confidence level strictly between 0 and 1."""
    ok = isinstance(level, numbers.Real) and not isinstance(level, bool)
    if not ok or not (0.0 < float(level) < 1.0):  # type: ignore[arg-type]
        raise UserError(
            f"the confidence level (--level, level=) must be a number in (0, 1), got {level!r}",
            "use e.g. --level 0.95 for a 95% interval",
        )
    return float(level)  # type: ignore[arg-type]


def check_scheme(scheme: object) -> str:
    """One of :data:`SCHEMES`."""
    if scheme not in SCHEMES:
        raise UserError(
            f"unknown bootstrap scheme (--scheme, scheme=) {scheme!r}",
            f"use one of {', '.join(repr(s) for s in SCHEMES)}",
        )
    return str(scheme)


def check_method(method: object) -> str:
    """One of :data:`METHODS` (case-insensitive, like scipy's ``method='BCa'``)."""
    name = method.lower() if isinstance(method, str) else method
    if name not in METHODS:
        raise UserError(
            f"unknown interval method (--ci-method, method=) {method!r}",
            f"use one of {', '.join(repr(m) for m in METHODS)}",
        )
    return str(name)


def check_seed(seed: object) -> np.uint64:
    """An integer seed in ``[0, 2**64)``."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < 2**64:
        raise UserError(
            f"the seed (--seed, seed=) must be an integer in [0, 2**64), got {seed!r}",
            "pass a fixed non-negative integer seed (it is recorded with the results)",
        )
    return np.uint64(int(seed))
