"""A corpus of broken inputs through the real CLI: each exits 2 with one line of stderr naming the
file and the field, and no traceback (fast; nothing here starts an engine).

Already covered elsewhere and not repeated here: spec keys in tests/engine/test_spec.py (unknown
top-level key, n = "four", n = 0, negative max_tokens / temperature, top_p > 1, missing model path,
missing task file), scored-run columns, NaN confidence, sentences without a response in
tests/metrics/test_analyze_io.py, over-long prompts (ledger rows) in tests/engine.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import polars as pl
import pytest
from helpers.reliability_helpers import REPO, make_raw_spec, write_toml

from engine.cli import main


def _run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    err = capsys.readouterr().err
    return code, err


def _assert_user_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


def _task_file(tmp_path: Path, body: bytes | str, name: str = "task.jsonl") -> Path:
    path = tmp_path / name
    path.write_bytes(body if isinstance(body, bytes) else body.encode())
    return path


def _spec_with_task(tmp_path: Path, task_path: Path, **task: object) -> Path:
    raw = make_raw_spec(tasks=[{"name": "local", "source": str(task_path), **task}])
    return write_toml(tmp_path / "spec.toml", raw)


GOOD_LINE = '{"id": "a", "question": "1 + 1?", "answers": ["2"], "split": "train"}\n'

SPEC_TEXT_CASES = {
    "malformed_toml": ("spec.toml", b'[run\nname = "x"\n', ["spec.toml", "parse"]),
    "malformed_yaml": ("spec.yaml", b"run: {name: [x\n", ["spec.yaml", "parse"]),
    "invalid_utf8_toml": ("spec.toml", b'[run]\nname = "\xff\xfe"\n', ["spec.toml"]),
    "toml_is_a_list_at_top": ("spec.yaml", b"- 1\n- 2\n", ["spec.yaml", "top level"]),
}


@pytest.mark.parametrize("case", sorted(SPEC_TEXT_CASES))
def test_spec_files_that_do_not_parse(case: str, tmp_path: Path, capsys) -> None:
    name, body, needles = SPEC_TEXT_CASES[case]
    path = tmp_path / name
    path.write_bytes(body)
    _assert_user_error(*_run_cli(["plan", str(path)], capsys), *needles)


SPEC_CASES: dict[str, tuple[dict, str]] = {
    "unknown_nested_key": (
        {"models": [{"name": "m", "path": "builtin:tiny", "enginge_args": {}}]},
        "models.0.enginge_args",
    ),
    "wrong_type_seed": ({"sampling": {"seed": "seven"}}, "sampling.seed"),
    "wrong_type_template": ({"prompts": [{"id": "p", "template": 5}]}, "prompts.0.template"),
    "wrong_type_engine_args": (
        {"models": [{"name": "m", "path": "builtin:tiny", "engine_args": "fast"}]},
        "models.0.engine_args",
    ),
    "wrong_type_splits": (
        {"tasks": [{"name": "t", "source": "builtin:arithmetic", "splits": [1, 2]}]},
        "tasks.0.splits",
    ),
    "negative_logprobs": ({"sampling": {"logprobs": -1}}, "sampling.logprobs"),
    "negative_seed": ({"sampling": {"seed": -3}}, "sampling.seed"),
    "zero_attempts": ({"run": {"max_attempts": 0}}, "run.max_attempts"),
    "negative_limit": (
        {"tasks": [{"name": "t", "source": "builtin:arithmetic", "limit": -2}]},
        "tasks.0.limit",
    ),
    "nan_temperature": ({"sampling": {"temperature": float("nan")}}, "sampling.temperature"),
    "inf_temperature": ({"sampling": {"temperature": float("inf")}}, "sampling.temperature"),
    "nan_top_p": ({"sampling": {"top_p": float("nan")}}, "sampling.top_p"),
    "zero_top_p": ({"sampling": {"top_p": 0.0}}, "sampling.top_p"),
    "duplicate_model_names": (
        {
            "models": [
                {"name": "m", "path": "builtin:tiny"},
                {"name": "m", "path": "builtin:tiny"},
            ]
        },
        "models",
    ),
    "missing_model_dir": (
        {"models": [{"name": "m", "path": "./no/such/model"}]},
        "models.0.path",
    ),
    "section_not_a_table": ({"sampling": [{"n": 2}]}, "sampling"),
}


@pytest.mark.parametrize("case", sorted(SPEC_CASES))
def test_bad_specs_name_the_field(case: str, tmp_path: Path, capsys) -> None:
    change, field = SPEC_CASES[case]
    path = write_toml(tmp_path / "spec.toml", make_raw_spec(**change))  # nan / inf as TOML
    _assert_user_error(*_run_cli(["plan", str(path)], capsys), str(path), field)


def test_bad_run_leaves_no_output_behind(tmp_path: Path, capsys) -> None:
    path = write_toml(
        tmp_path / "spec.toml", make_raw_spec(models=[{"name": "m", "path": "/no/such/model"}])
    )
    out = tmp_path / "out"
    _assert_user_error(*_run_cli(["run", str(path), "--out", str(out)], capsys), "models.0.path")
    assert not out.exists()


@pytest.mark.parametrize(
    ("override", "needle"),
    [("sampling.n", "sampling.n"), ("sampling.n=abc", "sampling.n"), ("nope.x=1", "nope")],
)
def test_bad_overrides(override: str, needle: str, capsys) -> None:
    spec = str(REPO / "configs" / "tiny.toml")
    _assert_user_error(*_run_cli(["plan", spec, "--set", override], capsys), needle)


TASK_CASES: dict[str, tuple[bytes | str, dict, list[str]]] = {
    "missing_question_column": ('{"id": "a", "answers": ["2"]}\n', {}, ["'question'", ":1"]),
    "missing_mapped_column": (GOOD_LINE, {"question_column": "prompt"}, ["'prompt'"]),
    "duplicate_ids": (GOOD_LINE + GOOD_LINE, {}, ["'a'", ":2", "repeats"]),
    "not_json": (GOOD_LINE + "{id: b}\n", {}, [":2", "JSON"]),
    "line_not_an_object": (GOOD_LINE + "5\n", {}, [":2"]),
    "invalid_utf8": (GOOD_LINE.encode() + b'{"id": "b", "question": "\xff\xfe?"}\n', {}, []),
    "empty_file": ("", {}, ["no items"]),
    "no_items_in_split": (GOOD_LINE, {"splits": ["test"]}, ["'test'", "no items"]),
}


@pytest.mark.parametrize("case", sorted(TASK_CASES))
def test_bad_task_files_name_the_file_and_line(case: str, tmp_path: Path, capsys) -> None:
    body, task, needles = TASK_CASES[case]
    task_path = _task_file(tmp_path, body)
    spec = _spec_with_task(tmp_path, task_path, **task)
    _assert_user_error(*_run_cli(["plan", str(spec)], capsys), str(task_path), *needles)


# ---- scored runs (mic analyze) -------------------------------------------------------------------

EXAMPLE = REPO / "metrics" / "data" / "example"


def _scored(
    tmp_path: Path, mutate_sent: Callable | None = None, mutate_resp: Callable | None = None
) -> Path:
    d = tmp_path / "scored"
    shutil.copytree(EXAMPLE, d)
    for name, mutate in (("sentences", mutate_sent), ("responses", mutate_resp)):
        if mutate is not None:
            path = next(d.glob(f"{name}.*"))
            df = pl.read_parquet(path)
            mutate(df).write_parquet(path)
    return d


@pytest.mark.parametrize("value", [float("inf"), float("-inf")])
def test_infinite_confidence(value: float, tmp_path: Path, capsys) -> None:
    d = _scored(
        tmp_path,
        mutate_sent=lambda s: s.with_columns(
            pl.when(pl.int_range(pl.len()) == 2)
            .then(value)
            .otherwise(pl.col("confidence"))
            .alias("confidence")
        ),
    )
    code, err = _run_cli(["analyze", str(d), "--out", str(tmp_path / "o")], capsys)
    _assert_user_error(code, err, "sentences", "'confidence'")
    assert not (tmp_path / "o" / "metrics.json").exists()


def test_response_sentence_count_disagrees_with_sentences(tmp_path: Path, capsys) -> None:
    d = _scored(
        tmp_path,
        mutate_resp=lambda r: r.with_columns(
            pl.when(pl.int_range(pl.len()) == 0)
            .then(0)
            .otherwise(pl.col("n_sentences"))
            .alias("n_sentences")
        ),
    )
    code, err = _run_cli(["analyze", str(d), "--out", str(tmp_path / "o")], capsys)
    _assert_user_error(code, err, "sentences.parquet", "n_sentences", "sentence_idx")


def test_a_scored_dir_that_is_a_generation_run(tmp_path: Path, capsys) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps({"run_id": "x"}))
    code, err = _run_cli(["analyze", str(tmp_path / "run"), "--out", str(tmp_path / "o")], capsys)
    _assert_user_error(code, err, str(tmp_path / "run"))


def test_a_closed_stdout_is_not_a_traceback() -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        f"{sys.executable} -m engine.cli plan {REPO / 'configs' / 'tiny.toml'} --json | head -1",
        shell=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.stdout.strip() == "{"
    assert "Traceback" not in proc.stderr and "BrokenPipe" not in proc.stderr
