"""Analysis of scored runs: MIC tables, the seven metrics, intervals and comparisons.

Never imports vllm or ray; reads Arrow/Parquet through polars. The Python API:

    from metrics import analyze
    result = analyze("runs/demo/scored", bootstrap=200)      # or (responses_df, sentences_df)
    result.metrics            # tidy polars DataFrame: model, prompt, metric, value, ci_lo, ...
    result.metrics_json       # the metrics.json document

Importing the package is cheap: `analyze` below is a thin entry point that imports the analysis
(polars, scipy, numba) on its first call, and the other names load on first use, so `mic --help`
and `from metrics import analyze` start in a blink.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metrics.analyze import AnalysisResult
    from metrics.frames import as_scored_run
    from metrics.io import ScoredRun, read_scored
    from metrics.tidy import tidy_metrics

__all__ = [
    "AnalysisResult",
    "ScoredRun",
    "analyze",
    "as_scored_run",
    "read_scored",
    "tidy_metrics",
]

# Name -> the module that defines it, imported on first use (module __getattr__, PEP 562).
_LAZY = {
    "AnalysisResult": "metrics.analyze",
    "ScoredRun": "metrics.io",
    "as_scored_run": "metrics.frames",
    "read_scored": "metrics.io",
    "tidy_metrics": "metrics.tidy",
}


def analyze(scored: Any, **options: Any) -> AnalysisResult:
    """Compute MIC tables and the seven metrics of one or more scored runs.

    The same function as `metrics.analyze.analyze` (see it for every option), imported on the
    first call so that importing `metrics` stays cheap.
    """
    from metrics.analyze import analyze as _analyze

    return _analyze(scored, **options)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _Package(types.ModuleType):
    """Keeps `metrics.analyze` the function when the submodule of that name is first loaded.

    Python binds a loaded submodule on its package (``metrics.analyze = <module>``); the eager
    ``from metrics.analyze import analyze`` this package used to run rebound the function over
    it. Refusing that one rebinding keeps ``from metrics import analyze`` the function, whoever
    imports the submodule first.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "analyze" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
