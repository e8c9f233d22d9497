"""Reading scored runs in every accepted shape, and one clear error for each kind of bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from engine.cli import main
from metrics import analyze

EXAMPLE = Path(__file__).resolve().parents[2] / "metrics" / "data" / "example"


def small_run(tmp_path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    resp = pl.read_parquet(EXAMPLE / "responses.parquet").filter(pl.col("model") == "model-0")
    sent = pl.read_parquet(EXAMPLE / "sentences.parquet").filter(pl.col("model") == "model-0")
    return resp, sent


def write(dirpath: Path, resp: pl.DataFrame, sent: pl.DataFrame, fmt: str = "parquet") -> Path:
    dirpath.mkdir(parents=True, exist_ok=True)
    for name, df in (("responses", resp), ("sentences", sent)):
        f = dirpath / f"{name}.{fmt}"
        {
            "parquet": df.write_parquet,
            "csv": df.write_csv,
            "jsonl": df.write_ndjson,
            "arrow": df.write_ipc,
        }[fmt](f)
    return dirpath


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ref")
    resp, sent = small_run(tmp)
    return analyze(write(tmp / "run", resp, sent))


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "arrow"])
def test_formats_give_the_same_result(tmp_path, reference, fmt):
    resp, sent = small_run(tmp_path)
    res = analyze(write(tmp_path / fmt, resp, sent, fmt))
    assert res.metrics_json["models"] == reference.metrics_json["models"]


def test_long_table_and_sharded_tables(tmp_path, reference):
    resp, sent = small_run(tmp_path)
    long = sent.join(resp, on=["model", "task", "split", "prompt", "item_id"])
    long.write_parquet(tmp_path / "long.parquet")
    assert (
        analyze(tmp_path / "long.parquet").metrics_json["models"]
        == reference.metrics_json["models"]
    )
    shards = tmp_path / "sharded"
    (shards / "responses").mkdir(parents=True)
    (shards / "sentences").mkdir(parents=True)
    for i, part in enumerate(resp.partition_by("task")):
        part.write_parquet(shards / "responses" / f"part-{i}.parquet")
    for i, part in enumerate(sent.partition_by("task")):
        part.write_parquet(shards / "sentences" / f"part-{i}.parquet")
    assert analyze(shards).metrics_json["models"] == reference.metrics_json["models"]


def test_prompt_column_may_be_absent(tmp_path, reference):
    resp, sent = small_run(tmp_path)
    res = analyze(write(tmp_path / "np", resp.drop("prompt"), sent.drop("prompt")))
    assert res.metrics_json["models"] == reference.metrics_json["models"]


def test_cli_writes_outputs_and_summary(tmp_path, capsys):
    code, out, err = run_cli(["analyze", str(EXAMPLE), "--out", str(tmp_path / "o")], capsys)
    assert code == 0, err
    assert "I-AvgMAE" in out and "model-1 / default" in out
    doc = json.loads((tmp_path / "o" / "metrics.json").read_text())
    assert set(doc["models"]) == {"model-0", "model-1"}
    block = doc["models"]["model-0"]["default"]
    for name in (
        "I-AvgMAE",
        "C-AvgMAE",
        "MRC",
        "MAC",
        "MCC",
        "I-AvgCV",
        "C-AvgCV",
        "MRC-S-sig",
        "MAC-P-all",
        "MCC-S-sig",
        "I-AvgMAE (Mode 4)",
        "I-AvgCV (shared)",
    ):
        assert name in block["metrics"]
        entry = block["metrics"][name]
        assert set(entry) >= {"value", "ci"}
    assert len(block["tasks"]) == 5 and len(block["shared_markers"]) >= 5
    table = pl.read_parquet(tmp_path / "o" / "mic.parquet")
    assert {
        "model",
        "prompt",
        "task",
        "marker",
        "count",
        "mic",
        "ci_lo",
        "ci_hi",
        "valid",
        "shared",
        "mic_c",
        "mic_i",
        "mic_f",
        "mic_uf",
        "mf",
    } <= set(table.columns)
    assert table.filter(pl.col("valid"))["count"].min() >= 10
    code, out, _ = run_cli(
        ["analyze", str(EXAMPLE), "--out", str(tmp_path / "j"), "--json"], capsys
    )
    assert json.loads(out)["settings"]["threshold"] == 10


def test_console_script_entry_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "engine.cli", "analyze", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "example:" in proc.stdout and "--mode" in proc.stdout


# ---- bad input: one line naming the file and the column, exit code 2, no traceback -------------


def _bad(tmp_path, capsys, mutate_resp=None, mutate_sent=None, fmt="parquet"):
    resp, sent = small_run(tmp_path)
    resp = mutate_resp(resp) if mutate_resp else resp
    sent = mutate_sent(sent) if mutate_sent else sent
    d = write(tmp_path / "bad", resp, sent, fmt)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("earlier results")
    code, _, err = run_cli(["analyze", str(d), "--out", str(out)], capsys)
    assert code == 2
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert (out / "keep.txt").read_text() == "earlier results"  # nothing already written is lost
    assert not (out / "metrics.json").exists()
    return err


def test_missing_column(tmp_path, capsys):
    err = _bad(tmp_path, capsys, mutate_sent=lambda s: s.drop("confidence"))
    assert "sentences.parquet" in err and "'confidence'" in err


def test_wrong_type(tmp_path, capsys):
    err = _bad(
        tmp_path, capsys, mutate_resp=lambda r: r.with_columns(pl.lit("yes").alias("correct"))
    )
    assert "responses.parquet" in err and "'correct'" in err and "expected Boolean" in err


def test_confidence_out_of_range(tmp_path, capsys):
    err = _bad(
        tmp_path,
        capsys,
        mutate_sent=lambda s: s.with_columns(
            pl.when(pl.int_range(pl.len()) == 5)
            .then(1.5)
            .otherwise(pl.col("confidence"))
            .alias("confidence")
        ),
    )
    assert "sentences.parquet" in err and "'confidence'" in err and "1.5" in err


def test_nan_confidence(tmp_path, capsys):
    err = _bad(
        tmp_path,
        capsys,
        mutate_sent=lambda s: s.with_columns(
            pl.when(pl.int_range(pl.len()) == 3)
            .then(float("nan"))
            .otherwise(pl.col("confidence"))
            .alias("confidence")
        ),
    )
    assert "'confidence'" in err and "null" in err


def test_duplicate_rows(tmp_path, capsys):
    err = _bad(tmp_path, capsys, mutate_sent=lambda s: pl.concat([s, s.head(1)]))
    assert "duplicate" in err and "sentences.parquet" in err and "item_id=" in err


def test_empty_task(tmp_path, capsys):
    err = _bad(tmp_path, capsys, mutate_sent=lambda s: s.filter(pl.col("task") != "mmlu"))
    assert "'mmlu'" in err and "no sentence rows" in err


def test_sentences_without_response(tmp_path, capsys):
    err = _bad(tmp_path, capsys, mutate_resp=lambda r: r.filter(pl.col("item_id") != "q000001"))
    assert "no response row" in err


def test_unknown_format(tmp_path, capsys):
    f = tmp_path / "scores.xlsx"
    f.write_text("x")
    code, _, err = run_cli(["analyze", str(f), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "scores.xlsx" in err and "unknown file format" in err


def test_empty_file(tmp_path, capsys):
    err = _bad(tmp_path, capsys, mutate_resp=lambda r: r.head(0))
    assert "no rows" in err


def test_bad_options(tmp_path, capsys):
    code, _, err = run_cli(
        ["analyze", str(EXAMPLE), "--out", str(tmp_path), "--threshold", "0"], capsys
    )
    assert code == 2 and "--threshold" in err


def test_outputs_are_ordinary_files_and_the_wrote_line_names_them(tmp_path, capsys):
    """Analysis outputs follow the umask like every other file (mkstemp makes 0600), and the
    closing line names every file written, comparisons.parquet included."""
    import os
    import stat

    example = Path(__file__).resolve().parents[2] / "metrics" / "data" / "example"
    out = tmp_path / "res"
    umask = os.umask(0o022)
    try:
        assert (
            main(["analyze", str(example), "--out", str(out), "--bootstrap", "50", "--compare"])
            == 0
        )
    finally:
        os.umask(umask)
    last = capsys.readouterr().out.strip().splitlines()[-1]
    for name in ("metrics.json", "mic.parquet", "comparisons.parquet"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name
        assert f"{out}/{name}" in last
    assert main(["analyze", str(example), "--out", str(out), "--bootstrap", "-3"]) == 2
    assert "--bootstrap" in capsys.readouterr().err


def test_cli_rank_resolution_is_stored_and_checked(tmp_path, capsys):
    out = tmp_path / "res"
    args = ["analyze", str(EXAMPLE), "--out", str(out), "--bootstrap", "30"]
    assert main([*args, "--rank-resolution", "0"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["settings"]["rank_resolution"] == 0.0
    mrc = doc["models"]["model-0"]["default"]["metrics"]["MRC"]
    assert mrc["ci_method"].startswith("plug-in")  # h = 0: the ordinary Spearman's interval
    capsys.readouterr()
    assert main([*args, "--rank-resolution", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--rank-resolution" in err and "Traceback" not in err
