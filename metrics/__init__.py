"""Analysis of scored runs: MIC tables, the seven metrics, intervals and comparisons.

Never imports vllm or ray at module level; reads Arrow/Parquet through polars.
"""

from metrics.analyze import AnalysisResult, analyze

__all__ = ["AnalysisResult", "analyze"]
