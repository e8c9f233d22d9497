"""The analysis does not guess silently: mixed runs, unknown split names, automatic splits."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from engine.errors import UserError
from metrics.analyze import analyze

EXAMPLE = Path(__file__).resolve().parents[2] / "metrics" / "data" / "example"


def _split_by_task(tmp_path: Path) -> tuple[Path, Path]:
    """The example's tasks in two scored-run folders: the same model names in both."""
    resp = pl.read_parquet(EXAMPLE / "responses.parquet")
    sent = pl.read_parquet(EXAMPLE / "sentences.parquet")
    first = {"arc_challenge", "mmlu"}
    dirs = []
    for name, keep in (("a", True), ("b", False)):
        d = tmp_path / name
        d.mkdir()
        mask = pl.col("task").is_in(first) if keep else ~pl.col("task").is_in(first)
        resp.filter(mask).write_parquet(d / "responses.parquet")
        sent.filter(mask).write_parquet(d / "sentences.parquet")
        dirs.append(d)
    return dirs[0], dirs[1]


def test_runs_sharing_a_model_name_are_refused_unless_pooled(tmp_path: Path) -> None:
    a, b = _split_by_task(tmp_path)
    with pytest.raises(UserError) as info:
        analyze([a, b])
    text = str(info.value)
    assert "model-0" in text and str(a) in text and str(b) in text and "--pool" in text
    pooled = analyze([a, b], pool=True).metrics_json
    whole = analyze(EXAMPLE).metrics_json
    for model, prompts in whole["models"].items():
        for metric, entry in prompts["default"]["metrics"].items():
            assert pooled["models"][model]["default"]["metrics"][metric] == entry, metric


def test_one_run_split_over_files_of_one_folder_is_not_refused(tmp_path: Path) -> None:
    long = pl.read_parquet(EXAMPLE / "sentences.parquet").join(
        pl.read_parquet(EXAMPLE / "responses.parquet"),
        on=["model", "task", "split", "prompt", "item_id"],
    )
    paths = []
    for i, part in enumerate(long.partition_by("task")):
        paths.append(tmp_path / f"part{i}.parquet")
        part.write_parquet(paths[-1])
    assert analyze(paths).metrics_json["models"]


def test_a_split_name_no_task_has_is_an_error() -> None:
    with pytest.raises(UserError, match="--eval-split 'tset'.*splits present"):
        analyze(EXAMPLE, eval_split="tset")
    with pytest.raises(UserError, match="--ref-split 'dev'"):
        analyze(EXAMPLE, ref_split="dev")


def test_the_automatic_50_50_split_is_printed(capsys) -> None:
    doc = analyze(EXAMPLE).metrics_json
    err = capsys.readouterr().err
    assert doc["settings"]["auto_split"]
    assert "split 50/50" in err and "popqa" in err and "truthfulqa" in err
