"""The seven metrics as one tidy table: a row per (model, prompt, metric).

`metrics.json` nests model -> prompt -> metrics; a notebook wants a DataFrame it can filter, pivot
and plot. Columns: model, prompt, metric, value, debiased (null until a debiased estimate is
written), ci_lo, ci_hi, n.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import polars as pl

TIDY_SCHEMA = {
    "model": pl.String,
    "prompt": pl.String,
    "metric": pl.String,
    "value": pl.Float64,
    "debiased": pl.Float64,
    "ci_lo": pl.Float64,
    "ci_hi": pl.Float64,
    "n": pl.Int64,
}


def tidy_metrics(doc: Mapping[str, Any]) -> pl.DataFrame:
    """Flatten a `metrics.json` document into the tidy metrics table.

    Args:
        doc: The document `analyze` writes (`AnalysisResult.metrics_json`).

    Returns:
        One row per (model, prompt, metric), in the document's order; an undefined metric has a
        null value (its reason stays in the JSON document).
    """
    rows = []
    for model, prompts in (doc.get("models") or {}).items():
        for prompt, block in prompts.items():
            for metric, entry in (block.get("metrics") or {}).items():
                if not isinstance(entry, Mapping):
                    continue
                ci = entry.get("ci") or (None, None)
                debiased = entry.get("debiased")
                if isinstance(debiased, Mapping):
                    debiased = debiased.get("value")
                rows.append(
                    {
                        "model": model,
                        "prompt": prompt,
                        "metric": metric,
                        "value": entry.get("value"),
                        "debiased": debiased,
                        "ci_lo": ci[0],
                        "ci_hi": ci[1],
                        "n": entry.get("n"),
                    }
                )
    return pl.DataFrame(rows, schema=TIDY_SCHEMA, orient="row")
