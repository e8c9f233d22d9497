"""Analysis of scored runs: MIC tables, the seven metrics, intervals and comparisons.

Never imports vllm or ray; reads Arrow/Parquet through polars. The Python API:

    from metrics import analyze
    result = analyze("runs/demo/scored", bootstrap=200)      # or (responses_df, sentences_df)
    result.metrics            # tidy polars DataFrame: model, prompt, metric, value, ci_lo, ...
    result.metrics_json       # the metrics.json document
"""

from metrics.analyze import AnalysisResult, analyze
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
