"""Recursive comparison of nested JSON-like results with a relative tolerance on floats."""

from __future__ import annotations

import math


def diff(a, b, rel: float = 1e-12, path: str = "") -> list[str]:
    """Paths where `a` and `b` differ (floats compared with relative tolerance `rel`)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}/{k}: only on one side" for k in set(a) ^ set(b)]
        for k in set(a) & set(b):
            out += diff(a[k], b[k], rel, f"{path}/{k}")
        return out
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in diff(x, y, rel, f"{path}[{i}]")]
    if (
        isinstance(a, float)
        and isinstance(b, float | int)
        or isinstance(b, float)
        and isinstance(a, int)
    ):
        if math.isclose(a, b, rel_tol=rel, abs_tol=rel):
            return []
        return [f"{path}: {a!r} != {b!r}"]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]
