"""Hostile input to `mic analyze` (and `mic report --out`) through the real CLI, built here by code.

Every case either fails with exit 2 and one line of stderr naming the file, column or option, or
is handled: then its result equals the result of the same data in plain form. In every case no
file appears or changes outside the output directory, and files already in `--out` are untouched
by a failed run.

    PYTHONPATH=$PWD python -m pytest -q -p no:cacheprovider tests/reliability/test_hostile_analyze.py
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from helpers.hostile import snapshot

from engine.cli import main
from engine.errors import UserError
from metrics import analyze, guards, kernels
from metrics.encode import encode, faithfulness_reference
from metrics.io import read_scored

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "metrics" / "data" / "example"
KEY = ["model", "task", "split", "prompt", "item_id"]


# ----------------------------------------------------------------------------- data


@pytest.fixture(scope="module")
def base() -> tuple[pl.DataFrame, pl.DataFrame]:
    """A small scored run: model-0, three tasks, 200 items each (train and test splits)."""
    resp = pl.read_parquet(EXAMPLE / "responses.parquet").filter(
        (pl.col("model") == "model-0") & pl.col("task").is_in(["arc_challenge", "mmlu", "sciq"])
    )
    resp = resp.filter(pl.int_range(pl.len()).over("task", "split") < 100)
    sent = pl.read_parquet(EXAMPLE / "sentences.parquet").join(resp.select(KEY), on=KEY, how="semi")
    return resp, sent


Table = pl.DataFrame | pa.Table


def write_run(path: Path, resp: Table, sent: Table, fmt: str = "parquet") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    for name, df in (("responses", resp), ("sentences", sent)):
        f = path / f"{name}.{fmt}"
        if isinstance(df, pa.Table):
            pq.write_table(df, f)
        elif fmt == "parquet":
            df.write_parquet(f)
        elif fmt == "csv":
            df.write_csv(f)
        elif fmt == "jsonl":
            df.write_ndjson(f)
        else:
            df.write_ipc(f)
    return path


class Cli:
    """Runs `mic` in process and checks what it wrote."""

    def __init__(self, tmp: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.tmp = tmp
        self.capsys = capsys

    def run(self, argv: list[str], out: Path | None = None) -> tuple[int, str]:
        """Run; assert nothing outside `out` changed and a sentinel in `out` survived."""
        sentinel = None
        if out is not None and out.is_dir():
            sentinel = out / "earlier.txt"
            sentinel.write_text("earlier result\n")
        before = snapshot(self.tmp)
        self.capsys.readouterr()
        code = main(argv)
        err = self.capsys.readouterr().err
        after = snapshot(self.tmp)
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        inside = str(out.relative_to(self.tmp)) + os.sep if out is not None else None
        outside = sorted(k for k in changed if inside is None or not k.startswith(inside))
        assert not outside, f"files written outside {out}: {outside}"
        if sentinel is not None:
            assert sentinel.read_text() == "earlier result\n"
        return code, err

    def analyze(self, data: Path | list[Path], *extra: str, out: Path | None = None) -> tuple:
        out = out if out is not None else self.tmp / "out"
        paths = [str(p) for p in (data if isinstance(data, list) else [data])]
        return self.run(["analyze", *paths, "--out", str(out), *extra], out)


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(tmp_path, capsys)


def assert_one_line(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    for needle in needles:
        assert needle in err, (needle, err)


def result(cli: Cli, data: Path | list[Path], *extra: str) -> tuple[dict, pl.DataFrame]:
    """Analyze (must succeed) and return (metrics.json models, mic.parquet)."""
    out = cli.tmp / f"out-{len(list(cli.tmp.glob('out-*')))}"
    code, err = cli.analyze(data, *extra, out=out)
    assert code == 0, err
    doc = json.loads((out / "metrics.json").read_text())
    return doc["models"], pl.read_parquet(out / "mic.parquet")


def same(a: tuple[dict, pl.DataFrame], b: tuple[dict, pl.DataFrame]) -> bool:
    """Equal metrics.json models and equal mic.parquet tables."""
    return a[0] == b[0] and a[1].equals(b[1])


def with_value(
    df: pl.DataFrame, column: str, value: object, items: pl.DataFrame | None = None
) -> pl.DataFrame:
    """`df` with `column` set to `value` on the rows of `items` (keys; default: its first 3)."""
    items = (items if items is not None else df.head(3)).select(KEY).unique()
    flagged = df.join(items.with_columns(_hit=pl.lit(True)), on=KEY, how="left")
    flagged = flagged.with_columns(pl.col("_hit").fill_null(False))
    return flagged.with_columns(
        pl.when(pl.col("_hit")).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
    ).drop("_hit")


# ----------------------------------------------------------------------------- 1. empty keys

# (table, column, value): a null or blank key on a few rows is refused, naming the column.
EMPTY_KEYS = {
    "prompt_null_in_responses": ("responses", "prompt", None),
    "prompt_null_in_sentences": ("sentences", "prompt", None),
    "split_null_in_both": ("both", "split", None),
    "split_empty_string": ("both", "split", ""),
    "split_white_space": ("both", "split", "  "),
    "prompt_blank": ("both", "prompt", " \t"),
    "model_blank": ("both", "model", ""),
    "task_blank": ("both", "task", " "),
    "item_id_blank": ("both", "item_id", ""),
    "marker_white_space": ("sentences", "marker", "   "),
}


@pytest.mark.parametrize("case", sorted(EMPTY_KEYS))
def test_null_or_blank_key_values_are_refused(case: str, base, cli: Cli) -> None:
    table, column, value = EMPTY_KEYS[case]
    resp, sent = base
    items = resp.head(3)  # the same responses in both tables: no orphan rows
    if table in ("responses", "both"):
        resp = with_value(resp, column, value, items)
    if table in ("sentences", "both"):
        sent = with_value(sent, column, value, items)
    data = write_run(cli.tmp / "run", resp, sent)
    assert_one_line(*cli.analyze(data), column, str(data))


def test_all_null_optional_columns_read_as_absent(base, cli: Cli) -> None:
    """A prompt / split column written but entirely empty says what a missing one says."""
    resp, sent = base
    plain = result(cli, write_run(cli.tmp / "plain", resp.drop("prompt"), sent.drop("prompt")))
    nulls = [pl.lit(None, dtype=pl.String).alias("prompt")]
    empty = write_run(cli.tmp / "empty", resp.with_columns(nulls), sent.with_columns(nulls), "csv")
    assert same(result(cli, empty), plain)


# ----------------------------------------------------------------------------- 2. categorical


def _dictionary(df: pl.DataFrame, columns: list[str] | None = None) -> pa.Table:
    """The table as pyarrow writes a dictionary-encoded string column."""
    t = df.to_arrow()
    for name in columns or [c for c in t.column_names if pa.types.is_string(t[c].type)]:
        if name in t.column_names:
            i = t.column_names.index(name)
            t = t.set_column(i, name, pc.dictionary_encode(t[name].cast(pa.string())))
    return t


def _long_table(table: pa.Table, d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, d / "long.parquet")
    return d / "long.parquet"


CATEGORICAL: dict[str, Callable[[pl.DataFrame, pl.DataFrame, Path], Path]] = {
    "pyarrow_dictionary_all_strings": lambda r, s, d: write_run(d, _dictionary(r), _dictionary(s)),
    "pyarrow_dictionary_keys_only": lambda r, s, d: write_run(
        d, _dictionary(r, ["model", "task"]), _dictionary(s, ["item_id", "split"])
    ),
    "polars_categorical": lambda r, s, d: write_run(
        d,
        r.with_columns(pl.col(pl.String).cast(pl.Categorical)),
        s.with_columns(pl.col(pl.String).cast(pl.Categorical)),
    ),
    "polars_enum": lambda r, s, d: write_run(
        d,
        r.with_columns(pl.col("task").cast(pl.Enum(sorted(set(r["task"]))))),
        s.with_columns(pl.col("marker").cast(pl.Enum(sorted(set(s["marker"]))))),
    ),
    "categorical_arrow_ipc": lambda r, s, d: write_run(
        d,
        r.with_columns(pl.col(pl.String).cast(pl.Categorical)),
        s.with_columns(pl.col(pl.String).cast(pl.Categorical)),
        "arrow",
    ),
    "long_table_dictionary": lambda r, s, d: _long_table(_dictionary(s.join(r, on=KEY)), d),
}


@pytest.mark.parametrize("case", sorted(CATEGORICAL))
def test_dictionary_encoded_strings_give_the_plain_result(case: str, base, cli: Cli) -> None:
    resp, sent = base
    plain = result(cli, write_run(cli.tmp / "plain", resp, sent))
    assert same(result(cli, CATEGORICAL[case](resp, sent, cli.tmp / "cat")), plain)


def test_pandas_category_columns(base, cli: Cli) -> None:
    pd = pytest.importorskip("pandas")
    resp, sent = base
    plain = result(cli, write_run(cli.tmp / "plain", resp, sent))
    d = cli.tmp / "pandas"
    d.mkdir()
    for name, df in (("responses", resp), ("sentences", sent)):
        frame = df.to_pandas()
        for c in frame.columns:
            if pd.api.types.is_string_dtype(frame[c]):
                frame[c] = frame[c].astype("category")
        assert isinstance(frame["task"].dtype, pd.CategoricalDtype)
        frame.to_parquet(d / f"{name}.parquet")
    assert same(result(cli, d), plain)


def test_shards_mixing_dictionary_and_plain_strings(base, cli: Cli) -> None:
    resp, sent = base
    plain = result(cli, write_run(cli.tmp / "plain", resp, sent))
    d = cli.tmp / "mixed"
    for name, df in (("responses", resp), ("sentences", sent)):
        (d / name).mkdir(parents=True)
        for i, part in enumerate(df.partition_by("task")):
            f = d / name / f"part-{i}.parquet"
            pq.write_table(_dictionary(part), f) if i % 2 else part.write_parquet(f)
    assert same(result(cli, d), plain)


# ----------------------------------------------------------------------------- 3. control chars


def _rename(df: pl.DataFrame, column: str, mapping: dict[str, str]) -> pl.DataFrame:
    return df.with_columns(pl.col(column).replace(mapping))


def test_model_and_prompt_that_would_join_to_the_same_key(base, cli: Cli) -> None:
    """("m\\x1fp", "q") and ("m", "p\\x1fq") are two groups, each with its own result."""
    resp, sent = base
    a = (resp.with_columns(model=pl.lit("m\x1fp"), prompt=pl.lit("q")),
         sent.with_columns(model=pl.lit("m\x1fp"), prompt=pl.lit("q")))  # fmt: skip
    b = (resp.with_columns(model=pl.lit("m"), prompt=pl.lit("p\x1fq")),
         sent.with_columns(model=pl.lit("m"), prompt=pl.lit("p\x1fq")))  # fmt: skip
    both, _ = result(cli, [write_run(cli.tmp / "a", *a), write_run(cli.tmp / "b", *b)])
    alone_a, _ = result(cli, write_run(cli.tmp / "a2", *a))
    assert sorted(both) == ["m", "m\x1fp"]
    assert both["m\x1fp"] == alone_a["m\x1fp"]
    assert both["m"]["p\x1fq"]["metrics"] == alone_a["m\x1fp"]["q"]["metrics"]


def test_split_and_item_that_would_join_to_the_same_key(base, cli: Cli) -> None:
    """(split "x\\x1fy", item "z") and (split "x", item "y\\x1fz") are two items to the bootstrap."""
    resp, sent = base
    first = resp.filter(pl.col("task") == "sciq").head(1)
    key = first.select(KEY)
    twin_r = first.with_columns(split=pl.lit("x"), item_id=pl.lit("y\x1fz"))
    orig_r = first.with_columns(split=pl.lit("x\x1fy"), item_id=pl.lit("z"))
    rows = sent.join(key, on=KEY, how="semi")
    twin_s = rows.with_columns(split=pl.lit("x"), item_id=pl.lit("y\x1fz"))
    orig_s = rows.with_columns(split=pl.lit("x\x1fy"), item_id=pl.lit("z"))
    resp2 = pl.concat([resp, orig_r, twin_r])
    sent2 = pl.concat([sent, orig_s, twin_s])
    # Parity mode: every response is resampled, whatever its split.
    data = write_run(cli.tmp / "run", resp2, sent2)
    code, err = cli.analyze(data, "--bootstrap", "20", "--mode", "parity")
    assert code == 0, err


def test_trailing_nul_keeps_items_apart(base, cli: Cli) -> None:
    """Item "q" and item "q\\x00" are two items (numpy fixed-width strings would merge them)."""
    resp, sent = base
    dup_r = resp.with_columns(pl.col("item_id") + "\x00")
    dup_s = sent.with_columns(pl.col("item_id") + "\x00")
    data = write_run(cli.tmp / "run", pl.concat([resp, dup_r]), pl.concat([sent, dup_s]))
    code, err = cli.analyze(data, "--bootstrap", "20", "--mode", "parity")
    assert code == 0, err


def _close(a: object, b: object) -> bool:
    """Equal JSON trees, floats to 1e-12 (renamed markers may sort in another order)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return abs(a - b) <= 1e-12 * max(1.0, abs(a))
    return a == b


@pytest.mark.parametrize(
    "column,char", [("marker", "\n"), ("marker", "\t"), ("task", "\x1f"), ("item_id", "\r\x1e")]
)
def test_control_characters_in_names_give_the_renamed_result(
    column: str, char: str, base, cli: Cli
) -> None:
    resp, sent = base
    plain, plain_mic = result(cli, write_run(cli.tmp / "plain", resp, sent))
    mapping = {n: f"{n}{char}x" for n in sorted(set(sent[column]))}
    r2 = _rename(resp, column, mapping) if column in resp.columns else resp
    got, got_mic = result(cli, write_run(cli.tmp / "ctrl", r2, _rename(sent, column, mapping)))
    if column in got_mic.columns:
        got_mic = got_mic.with_columns(pl.col(column).replace({v: k for k, v in mapping.items()}))
    cols = [c for c in plain_mic.columns if plain_mic.schema[c] != pl.Float64]
    assert (
        got_mic.sort("task", "marker")
        .select(cols)
        .equals(plain_mic.sort("task", "marker").select(cols))
    )
    floats = [c for c in plain_mic.columns if c not in cols]
    a, b = got_mic.sort("task", "marker"), plain_mic.sort("task", "marker")
    for c in floats:
        assert np.allclose(a[c].to_numpy(), b[c].to_numpy(), rtol=1e-12, atol=0, equal_nan=True)
    assert _close(got["model-0"]["default"]["metrics"], plain["model-0"]["default"]["metrics"])


# ----------------------------------------------------------------------------- 4. counts


# (table, column, dtype of the written column, value on two rows; None: one more than the data)
COUNTS = {
    "n_sentences_beyond_int32": ("responses", "n_sentences", pl.Int64, 2**33),
    "n_sentences_uint64_max": ("responses", "n_sentences", pl.UInt64, 2**64 - 1),
    "n_sentences_int32_max": ("responses", "n_sentences", pl.Int32, 2**31 - 1),
    "n_sentences_one_more_than_rows": ("responses", "n_sentences", pl.Int32, None),
    "n_sentences_negative": ("responses", "n_sentences", pl.Int32, -1),
    "sentence_idx_beyond_int32": ("sentences", "sentence_idx", pl.Int64, 2**40),
    "sentence_idx_negative": ("sentences", "sentence_idx", pl.Int64, -5),
}


@pytest.mark.parametrize("case", sorted(COUNTS))
def test_counts_out_of_range_or_invented_are_refused(case: str, base, cli: Cli) -> None:
    table, column, dtype, value = COUNTS[case]
    resp, sent = base
    df = resp if table == "responses" else sent
    values = df.get_column(column).cast(dtype).to_list()
    values[:2] = [v + 1 for v in values[:2]] if value is None else [value, value]
    df = df.with_columns(pl.Series(column, values, dtype=dtype))
    resp, sent = (df, sent) if table == "responses" else (resp, df)
    data = write_run(cli.tmp / "run", resp, sent)
    assert_one_line(*cli.analyze(data), column, str(data / f"{table}.parquet"))


def test_int64_counts_within_range_are_read(base, cli: Cli) -> None:
    resp, sent = base
    plain = result(cli, write_run(cli.tmp / "plain", resp, sent))
    wide = write_run(
        cli.tmp / "wide",
        resp.with_columns(pl.col("n_sentences").cast(pl.UInt64)),
        sent.with_columns(pl.col("sentence_idx").cast(pl.Int64)),
    )
    assert same(result(cli, wide), plain)


# ----------------------------------------------------------------------------- 5. duplicates


def test_duplicated_csv_column_is_refused(base, cli: Cli) -> None:
    resp, sent = base
    data = write_run(cli.tmp / "run", resp, sent, "csv")
    lines = (data / "responses.csv").read_text().splitlines()
    body = [lines[0] + ",correct"] + [line + ",false" for line in lines[1:]]
    (data / "responses.csv").write_text("\n".join(body) + "\n")
    assert_one_line(*cli.analyze(data), "'correct'", "responses.csv")


def test_duplicated_csv_column_after_a_bom_is_refused(base, cli: Cli) -> None:
    resp, sent = base
    data = write_run(cli.tmp / "run", resp, sent, "csv")
    text = (data / "sentences.csv").read_text().splitlines()
    (data / "sentences.csv").write_text(
        "\ufeffmodel," + "\n".join([text[0]] + [f"x,{line}" for line in text[1:]]) + "\n"
    )
    assert_one_line(*cli.analyze(data), "'model'", "sentences.csv")


def test_duplicated_jsonl_key_is_refused(base, cli: Cli) -> None:
    resp, sent = base
    data = write_run(cli.tmp / "run", resp, sent, "jsonl")
    lines = (data / "responses.jsonl").read_text().splitlines()
    lines[0] = lines[0][:-1] + ', "task": "other"}'
    (data / "responses.jsonl").write_text("\n".join(lines) + "\n")
    assert_one_line(*cli.analyze(data), "'task'", "responses.jsonl")


def test_duplicated_parquet_field_is_refused(base, cli: Cli) -> None:
    resp, sent = base
    t = resp.to_arrow()
    t = pa.Table.from_arrays([*t.columns, t["correct"]], names=[*t.column_names, "correct"])
    data = write_run(cli.tmp / "run", t, sent)
    assert_one_line(*cli.analyze(data), "responses.parquet")


# ----------------------------------------------------------------------------- 6. --out


def test_out_that_is_an_existing_file(base, cli: Cli) -> None:
    data = write_run(cli.tmp / "run", *base)
    target = cli.tmp / "results.json"
    target.write_text("keep me")
    assert_one_line(*cli.run(["analyze", str(data), "--out", str(target)]), "--out", str(target))
    assert target.read_text() == "keep me"


def test_out_below_a_file(base, cli: Cli) -> None:
    data = write_run(cli.tmp / "run", *base)
    (cli.tmp / "plain.txt").write_text("x")
    out = cli.tmp / "plain.txt" / "deeper" / "out"
    assert_one_line(*cli.run(["analyze", str(data), "--out", str(out)]), "plain.txt")


@pytest.mark.parametrize("out", ["", "bad\x00name"])
def test_out_that_is_no_usable_name(out: str, base, cli: Cli) -> None:
    data = write_run(cli.tmp / "run", *base)
    assert_one_line(*cli.run(["analyze", str(data), "--out", out]), "--out")


def test_failed_run_leaves_earlier_results_in_out(base, cli: Cli) -> None:
    resp, sent = base
    out = cli.tmp / "out"
    assert cli.analyze(write_run(cli.tmp / "good", resp, sent), out=out)[0] == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    bad = write_run(cli.tmp / "bad", with_value(resp, "split", ""), sent)
    assert_one_line(*cli.analyze(bad, out=out), "split")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.name != "earlier.txt"} == before


def test_report_out_that_is_a_directory(base, cli: Cli) -> None:
    out = cli.tmp / "analysis"
    assert cli.analyze(write_run(cli.tmp / "run", *base), out=out)[0] == 0
    code, err = cli.run(["report", str(out), "--out", str(out)], out)
    assert_one_line(code, err, "--out", str(out))
    assert not list(cli.tmp.rglob("*.tmp"))


def test_report_out_below_a_file(base, cli: Cli) -> None:
    out = cli.tmp / "analysis"
    assert cli.analyze(write_run(cli.tmp / "run", *base), out=out)[0] == 0
    (cli.tmp / "f").write_text("x")
    code, err = cli.run(["report", str(out), "--out", str(cli.tmp / "f" / "r.html")])
    assert_one_line(code, err, str(cli.tmp / "f"))
    assert not list(cli.tmp.rglob("*.tmp"))


# ----------------------------------------------------------------------------- 7. bootstrap


def test_multinomial_with_a_group_without_evaluation_items(base, cli: Cli) -> None:
    """A model with one item has no evaluation item: an empty stratum set, not a crash; the other
    model's numbers are those it gets alone."""
    resp, sent = base
    one = resp.filter(pl.col("task") == "mmlu").head(1)
    solo_r = one.with_columns(model=pl.lit("solo"))
    solo_s = sent.join(one.select(KEY), on=KEY, how="semi").with_columns(model=pl.lit("solo"))
    opts = ("--bootstrap", "64", "--scheme", "multinomial")
    both, _ = result(
        cli,
        write_run(cli.tmp / "both", pl.concat([resp, solo_r]), pl.concat([sent, solo_s])),
        *opts,
    )
    alone, _ = result(cli, write_run(cli.tmp / "alone", resp, sent), *opts)
    assert both["model-0"] == alone["model-0"]
    assert "solo" in both


def test_bootstrap_that_cannot_fit_is_refused_with_a_smaller_b(base, cli: Cli) -> None:
    data = write_run(cli.tmp / "run", *base)
    code, err = cli.analyze(data, "--bootstrap", "10000000")
    assert_one_line(code, err, "--bootstrap 10,000,000", "use --bootstrap ")
    suggested = int(err.split("use --bootstrap ")[1].split()[0])
    run = read_scored(data)
    enc = encode(run, threshold=10)
    assert guards.check_bootstrap(enc, suggested).n_boot == suggested  # the suggestion fits


def test_memory_estimate_scales_and_refuses(base, tmp_path: Path) -> None:
    enc = encode(read_scored(write_run(tmp_path / "run", *base)), threshold=10)
    small = guards.estimate_bootstrap(enc, 1000)
    assert guards.estimate_bootstrap(enc, 2000).peak_bytes == 2 * small.peak_bytes
    with pytest.raises(UserError, match="use --bootstrap"):
        guards.check_bootstrap(enc, 1000, available=small.peak_bytes // 2)
    assert guards.check_bootstrap(enc, 1000, available=small.peak_bytes * 2).n_boot == 1000


def test_long_bootstrap_shows_progress_and_eta(base, cli: Cli, monkeypatch) -> None:
    monkeypatch.setattr(guards, "PROGRESS_AFTER_S", 0.0)
    code, err = cli.analyze(write_run(cli.tmp / "run", *base), "--bootstrap", "64")
    assert code == 0, err
    line = err.strip().splitlines()[-1]
    assert "64 replicates, estimated" in line and "1/1" in line, err


# ----------------------------------------------------------------------------- 8. scale shapes


def test_markers_below_the_threshold_leave_the_arrays_not_the_table(base, tmp_path: Path) -> None:
    """A long tail of singleton markers: the arrays hold the markers that reach tau, and
    mic.parquet is the table the full marker set gives."""
    resp, sent = base
    rng = np.random.default_rng(0)
    tail = rng.random(sent.height) < 0.5
    names = [f"hedge #{i}" for i in range(sent.height)]
    sent = sent.with_columns(
        pl.when(pl.Series(tail)).then(pl.Series(names)).otherwise(pl.col("marker")).alias("marker")
    )
    data = write_run(tmp_path / "run", resp, sent)
    pruned = analyze(data, threshold=10)
    run = read_scored(data)
    enc = encode(run, threshold=10)
    assert enc.n_markers < 60 < enc.dropped.height
    from metrics.analyze import _mic_table, group_views
    from metrics.core import compute_tables

    full = encode(run)  # every marker
    tables, valid = compute_tables(full, threshold=10)
    views = group_views(full, tables, valid)
    ci = np.full((2, *tables.mic.shape), np.nan)
    assert pruned.mic_table.equals(_mic_table(full, tables, views, valid, ci))


def test_one_huge_response_is_handled_like_many_small_ones(tmp_path: Path) -> None:
    """Rows of a response far beyond the pairwise-scan size, in reversed sentence order."""
    k = 5 * kernels.SMALL_RESPONSE + 7
    rng = np.random.default_rng(1)
    sidx = np.repeat(np.arange(k, dtype=np.int32)[::-1], 2)
    marker = np.tile(np.array([0, 1], dtype=np.uint32), k)
    conf = np.repeat(rng.random(k), 2)
    dec = np.repeat(rng.random(k), 2)
    conf[::7] = np.nan
    s_r = np.zeros(2 * k, dtype=np.int64)
    ptr, order = kernels.by_response(s_r, 1)
    first, n_seen = kernels.sentence_rows(ptr, order, sidx, marker)
    assert first == -1 and n_seen[0] == k
    f, c = kernels.faithfulness(ptr, order, sidx, conf, dec, np.array([k]))
    ref = pl.DataFrame({"_r": s_r, "sentence_idx": sidx, "confidence": conf, "decisiveness": dec})
    ref = ref.with_columns(pl.col("confidence").fill_nan(None))
    f_ref, c_ref = faithfulness_reference(ref, np.array([k]), 1)
    assert f[0] == f_ref[0] and c[0] == c_ref[0]
    marker[5] = marker[4]  # rows 4 and 5 share a sentence: now the same marker too
    assert kernels.sentence_rows(ptr, order, sidx, marker)[0] in (4, 5)


# ----------------------------------------------------------------------------- 9. --ray


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address", ["closed", "no-port-here", "host:notaport"])
def test_ray_address_that_does_not_answer(address: str, base, cli: Cli) -> None:
    if address == "closed":
        address = f"127.0.0.1:{_closed_port()}"
    data = write_run(cli.tmp / "run", *base)
    code, err = cli.analyze(data, "--bootstrap", "10", "--ray", address)
    assert_one_line(code, err, f"--ray {address}")


def test_ray_address_that_accepts_but_never_joins_times_out(tmp_path: Path) -> None:
    """Something listens but is no Ray head: Ray's loop would retry for minutes; ours gives up
    after the timeout (3 s here) with one line. In a child process: the abandoned connect thread
    must not share this test session's Ray."""
    code = (
        "import socket, sys\n"
        "s = socket.socket(); s.bind(('0.0.0.0', 0)); s.listen(8)\n"
        "from engine.cluster import ray_group_sums\n"
        "from engine.errors import UserError\n"
        "try:\n"
        "    ray_group_sums(None, f'127.0.0.1:{s.getsockname()[1]}', connect_timeout=3)\n"
        "except UserError as e:\n"
        "    print('USERERROR', e); sys.exit(2)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env,
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "did not accept the connection within 3 s" in proc.stdout
