"""`analyze` from a notebook: in-memory tables (polars, pandas, lazy) and the tidy metrics table."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from engine.errors import UserError
from metrics import analyze

EXAMPLE = Path(__file__).resolve().parents[2] / "metrics" / "data" / "example"


@pytest.fixture(scope="module")
def tables() -> tuple[pl.DataFrame, pl.DataFrame]:
    resp = pl.read_parquet(EXAMPLE / "responses.parquet").filter(pl.col("model") == "model-0")
    sent = pl.read_parquet(EXAMPLE / "sentences.parquet").filter(pl.col("model") == "model-0")
    return resp, sent


@pytest.fixture(scope="module")
def from_files(tmp_path_factory, tables):
    d = tmp_path_factory.mktemp("run")
    tables[0].write_parquet(d / "responses.parquet")
    tables[1].write_parquet(d / "sentences.parquet")
    return analyze(d)


def _models(result) -> dict:
    return json.loads(json.dumps(result.metrics_json["models"]))


@pytest.mark.parametrize("shape", ["polars", "lazy", "pandas", "mapping", "long"])
def test_in_memory_tables_give_the_same_metrics_as_files(tables, from_files, shape) -> None:
    resp, sent = tables
    if shape == "polars":
        scored = (resp, sent)
    elif shape == "lazy":
        scored = (resp.lazy(), sent.lazy())
    elif shape == "pandas":
        pytest.importorskip("pandas")  # a test extra; the analysis itself does not need it
        scored = (resp.to_pandas(), sent.to_pandas())
    elif shape == "mapping":
        scored = {"responses": resp, "sentences": sent}
    else:
        scored = sent.join(resp, on=["model", "task", "split", "prompt", "item_id"]).lazy()
    result = analyze(scored)
    assert _models(result) == _models(from_files)
    assert result.mic_table.equals(from_files.mic_table)


def test_the_tidy_metrics_table(from_files) -> None:
    tidy = from_files.metrics
    assert tidy.columns == [
        "model",
        "prompt",
        "metric",
        "value",
        "debiased",
        "ci_lo",
        "ci_hi",
        "n",
    ]
    doc = from_files.metrics_json["models"]
    expected = sum(len(p["metrics"]) for m in doc.values() for p in m.values())
    assert tidy.height == expected > 0
    row = tidy.row(0, named=True)
    entry = doc[row["model"]][row["prompt"]]["metrics"][row["metric"]]
    assert row["value"] == entry["value"] and row["n"] == entry.get("n")


def test_a_bad_in_memory_table_is_a_user_error_naming_it(tables) -> None:
    resp, sent = tables
    with pytest.raises(UserError, match=r"<sentences DataFrame>: missing column 'confidence'"):
        analyze((resp, sent.drop("confidence")))
    with pytest.raises(ValueError, match="not a table"):  # UserError is a ValueError
        analyze({"responses": resp, "sentences": 5})
