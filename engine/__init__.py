"""Generation and judging engine: sweep spec -> stored generations and judge scores.

The Python API (`engine.api`) is exported here: `load_spec`, `plan`, `run_sweep`, `score_run`,
`run_study` and their result types. Importing this package is cheap: the API module, Ray and vLLM
are imported on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = [
    "ScoreResult",
    "StudyResult",
    "SweepResult",
    "load_spec",
    "plan",
    "run_demo",
    "run_study",
    "run_sweep",
    "score_run",
]

if TYPE_CHECKING:
    from engine.api import (
        ScoreResult,
        StudyResult,
        SweepResult,
        load_spec,
        plan,
        run_demo,
        run_study,
        run_sweep,
        score_run,
    )


def __getattr__(name: str) -> Any:
    if name in __all__:
        from engine import api

        return getattr(api, name)
    raise AttributeError(f"module 'engine' has no attribute {name!r}")
