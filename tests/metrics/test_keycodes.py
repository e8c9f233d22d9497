"""The compiled key passes of `metrics.keycodes` against plain Python / numpy references."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from metrics import keycodes
from metrics.io import KEY, _key_hash

MULT = np.uint64(0x9E3779B97F4A7C15)


def _reference_key_hash(df: pl.DataFrame, key: list[str]) -> np.ndarray:
    """The numpy key hash validation used before the compiled passes (column by column)."""
    h = np.zeros(df.height, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for i, k in enumerate(key):
            h ^= df.get_column(k).cast(pl.String).hash(seed=7 + i).to_numpy()
            h *= MULT
            h ^= h >> np.uint64(29)
    return h


def _frame(n: int, seed: int) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    return pl.DataFrame(
        {
            "model": [f"m{i}" for i in rng.integers(0, 3, n)],
            "prompt": ["default"] * n,
            "task": [f"task {i}" for i in rng.integers(0, 4, n)],
            "split": [("train", "test")[i] for i in rng.integers(0, 2, n)],
            "item_id": [f"q{i:05d}" for i in rng.integers(0, 500, n)],
        }
    )


@pytest.mark.parametrize("categorical", [False, True])
def test_key_hash_matches_the_numpy_reference(categorical: bool) -> None:
    df = _frame(3000, seed=1)
    if categorical:  # as a sentences table is read: codes plus a table of distinct texts
        df = df.with_columns(pl.col(KEY).cast(pl.Categorical))
    expected = _reference_key_hash(df, KEY)
    np.testing.assert_array_equal(_key_hash(df, KEY), expected)
    # Extending a prefix hash gives the full one (validation reuses (model, prompt, task)).
    prefix = _key_hash(df, KEY[:3])
    np.testing.assert_array_equal(prefix, _reference_key_hash(df, KEY[:3]))
    np.testing.assert_array_equal(_key_hash(df, KEY[3:], h=prefix.copy(), start=3), expected)


def test_first_rows_gives_the_first_occurrence_of_each_code() -> None:
    codes = np.array([4, 1, 4, 0, 1, 6], dtype=np.uint32)
    np.testing.assert_array_equal(keycodes.first_rows(codes, 8), [3, 1, -1, -1, 0, -1, 5, -1])


def _reference_link(resp: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, bool]:
    index: dict[int, int] = {}
    for i, k in enumerate(resp.tolist()):
        if k in index:
            return np.empty(0, dtype=np.int64), False
        index[k] = i
    return np.array([index.get(k, -1) for k in rows.tolist()], dtype=np.int64), True


@pytest.mark.parametrize("order", ["same", "shuffled"])
def test_link_matches_a_dict(order: str) -> None:
    rng = np.random.default_rng(2)
    resp = rng.integers(0, 2**63, 5000, dtype=np.uint64)
    # 1-3 rows per response in response order, plus rows of no response scattered in.
    per = rng.integers(1, 4, len(resp))
    rows = np.repeat(resp, per)
    orphans = rng.integers(0, 2**63, 300, dtype=np.uint64)
    rows = np.insert(rows, rng.integers(0, len(rows), 300), orphans)
    if order == "shuffled":
        rows = rng.permutation(rows)
        resp = rng.permutation(resp)
    got, unique = keycodes.link(resp, rows)
    want, _ = _reference_link(resp, rows)
    assert unique
    np.testing.assert_array_equal(got, want)
    assert (got == -1).sum() == 300


def test_link_reports_repeated_response_keys() -> None:
    resp = np.array([5, 9, 7, 9], dtype=np.uint64)
    _, unique = keycodes.link(resp, np.array([5, 7], dtype=np.uint64))
    assert not unique


@pytest.mark.parametrize("order", ["grouped", "shuffled"])
def test_groups_with_rows_matches_np_unique(order: str) -> None:
    rng = np.random.default_rng(3)
    keys = np.repeat(rng.integers(0, 2**63, 300, dtype=np.uint64), rng.integers(1, 50, 300))
    if order == "shuffled":
        keys = rng.permutation(keys)
    has = rng.random(len(keys)) < 0.3
    uniq, first, count, group = keycodes.groups_with_rows(keys, has)
    np.testing.assert_array_equal(uniq[group], keys)  # each row's group holds its key
    want, want_first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    sort = np.argsort(uniq)
    np.testing.assert_array_equal(uniq[sort], want)
    np.testing.assert_array_equal(first[sort], want_first)
    np.testing.assert_array_equal(
        count[sort], np.bincount(inverse.reshape(-1), weights=has, minlength=len(want))
    )
    # First-appearance order: each group's first row comes before the next group's.
    assert (np.diff(first) > 0).all()


def test_one_compiled_signature_for_one_chunk_or_several() -> None:
    # Polars gives a one-chunk column's codes read-only and a many-chunk column's as a writable
    # copy; numba would compile each kernel twice, and the install's warm-up reaches one kind.
    df = _frame(2000, seed=4).with_columns(pl.col(KEY).cast(pl.Categorical))
    chunked = pl.concat([df[:700], df[700:]], rechunk=False)
    assert chunked.get_column("item_id").n_chunks() == 2
    kernels = (keycodes.mix_codes, keycodes.first_rows, keycodes.mix_hashes)
    _key_hash(df, KEY)
    _key_hash(df.with_columns(pl.col(KEY).cast(pl.String)), KEY)
    seen = [set(k.signatures) for k in kernels]
    _key_hash(chunked, KEY)
    _key_hash(chunked.with_columns(pl.col(KEY).cast(pl.String)), KEY)
    assert [set(k.signatures) for k in kernels] == seen


def _sentences_file(path, n: int, seed: int, drop: tuple[str, ...] = ()) -> pl.DataFrame:
    """A sentences table of `n` rows written to `path` in row groups of 700 rows."""
    rng = np.random.default_rng(seed)
    df = (
        _frame(n, seed)
        .with_columns(
            pl.Series("sentence_idx", rng.integers(0, 3, n), dtype=pl.Int32),
            pl.Series(
                "marker", [("probably", "<no_hedge>", "maybe")[i] for i in rng.integers(0, 3, n)]
            ),
            pl.Series("confidence", rng.random(n)),
            pl.Series("decisiveness", rng.random(n)),
        )
        .drop(drop)
    )
    df.write_parquet(path, row_group_size=700)
    return df


@pytest.mark.parametrize("drop", [(), ("prompt", "split")])
def test_keyed_reader_hashes_as_the_full_reader(tmp_path, drop: tuple[str, ...]) -> None:
    from metrics.io import (
        SENTENCE_COLUMNS,
        SENTENCE_VALUES,
        _conform,
        _read,
        _read_keyed,
        _run_categories,
    )

    path = tmp_path / "sentences.parquet"
    _sentences_file(path, 3000, seed=5, drop=drop)
    # The full reader: every column, keys as categoricals, then the key hash column by column.
    cats = _run_categories()
    full = _conform(_read(path, compact=True, cats=cats), SENTENCE_COLUMNS, path, 0, True, cats)
    kernels = (keycodes.mix_codes, keycodes.mix_hashes, keycodes.first_rows)
    want = _key_hash(full, KEY)
    seen = [set(k.signatures) for k in kernels]
    values, got = _read_keyed(path, 0, _run_categories())
    np.testing.assert_array_equal(got, want)
    # The value columns are the full reader's, and no kernel compiled a second signature.
    assert values.columns == [*SENTENCE_VALUES, "_source"]
    assert values.with_columns(pl.col("marker").cast(pl.String)).equals(
        full.select(values.columns).with_columns(pl.col("marker").cast(pl.String))
    )
    assert [set(k.signatures) for k in kernels] == seen


def test_keyed_reader_leaves_odd_files_to_the_full_reader(tmp_path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from metrics.io import _NeedsFullRead, _read_keyed, _run_categories

    df = _sentences_file(tmp_path / "plain.parquet", 50, seed=6)
    odd = {
        "integer_ids": df.with_columns(pl.Series("item_id", range(50))),
        "empty_key": df.with_columns(
            pl.when(pl.int_range(pl.len()) == 7).then(None).otherwise(pl.col("task")).alias("task")
        ),
        "no_model": df.drop("model"),
    }
    for name, frame in odd.items():
        frame.write_parquet(tmp_path / f"{name}.parquet")
        with pytest.raises(_NeedsFullRead):
            _read_keyed(tmp_path / f"{name}.parquet", 0, _run_categories())
    # Keys stored as Arrow dictionaries (pandas categoricals) are read keyed, with the same hash.
    table = df.to_arrow()
    for k in KEY:
        i = table.schema.get_field_index(k)
        table = table.set_column(i, k, table.column(k).dictionary_encode())
    pq.write_table(table, tmp_path / "dict.parquet")
    assert pa.types.is_dictionary(pq.read_schema(tmp_path / "dict.parquet").field("item_id").type)
    _, from_dict = _read_keyed(tmp_path / "dict.parquet", 0, _run_categories())
    _, from_text = _read_keyed(tmp_path / "plain.parquet", 0, _run_categories())
    np.testing.assert_array_equal(from_dict, from_text)


def test_codes_count_from_zero_however_many_strings_the_process_interned(tmp_path) -> None:
    # Polars' default categories number every string the process has seen: a run read after
    # 100k others got codes 100000+, and tables sized by the codes grew with each run analysed.
    from pathlib import Path

    from metrics.io import SENTENCE_COLUMNS, _cat_column, _conform, _read, read_scored

    example = Path(__file__).resolve().parents[2] / "metrics" / "data" / "example"
    csv_run = tmp_path / "csv"
    csv_run.mkdir()
    for name in ("responses", "sentences"):
        pl.read_parquet(example / f"{name}.parquet").write_csv(csv_run / f"{name}.csv")
    sizes = []
    for attempt in range(2):
        pl.Series([f"s{attempt}-{i}" for i in range(100_000)]).cast(pl.Categorical)
        for run_dir in (example, csv_run):
            marker = read_scored(run_dir).sentences.get_column("marker")
            assert marker.to_physical().max() + 1 == marker.n_unique()
        path = csv_run / "sentences.csv"
        raw = _read(path)
        compact = _conform(raw, SENTENCE_COLUMNS, path, 0, compact=True)
        for k in KEY:  # the key columns the full reader hashes through their codes
            col = _cat_column(compact.get_column(k))
            assert col.n_codes == raw.get_column(k).n_unique()
            sizes.append(col.n_codes)
    assert sizes[: len(KEY)] == sizes[len(KEY) :]


def test_encode_takes_validations_groups_as_it_would_cast_the_strings() -> None:
    # `encode` names and numbers the (model, prompt, task) groups from validation's grouping
    # of the responses; without it (a run built elsewhere) it casts every response's strings.
    import dataclasses
    from pathlib import Path

    from metrics.encode import encode
    from metrics.io import read_scored

    run = read_scored(Path(__file__).resolve().parents[2] / "metrics" / "data" / "example")
    assert run.triples is not None
    # Responses in another order than their groups', so a wrong lookup would show.
    shuffled = np.random.default_rng(7).permutation(run.responses.height)
    reordered = _reordered(run, shuffled)
    for r in (run, reordered):
        fast, slow = encode(r), encode(dataclasses.replace(r, triples=None))
        assert (fast.groups, fast.tasks, fast.markers) == (slow.groups, slow.tasks, slow.markers)
        for name in ("r_g", "r_t", "r_ref", "r_eval", "s_m"):
            got, want = getattr(fast, name), getattr(slow, name)
            assert got.dtype == want.dtype
            np.testing.assert_array_equal(got, want)


def _reordered(run, order: np.ndarray):
    """`run`'s tables with the responses in `order`, validated again (in memory)."""
    from metrics.frames import as_scored_run

    resp = run.responses.drop("_source")[order]
    # Each sentence row gets back its response's key columns through `_r`.
    keys = run.responses.select(KEY).with_row_index("_r").with_columns(pl.col("_r").cast(pl.Int64))
    sent = run.sentences.join(keys, on="_r").drop("_r", "_source")
    return as_scored_run((resp, sent.with_columns(pl.col("marker").cast(pl.String))))


def test_read_scored_reads_parquet_sentences_keyed(monkeypatch, tmp_path) -> None:
    # The example is read in one keyed pass; a run the keyed reader cannot vouch for (a blank
    # item id) is read again in full, which names the problem.
    from pathlib import Path

    from engine.errors import UserError
    from metrics import io

    calls: list[bool] = []
    inner = io._read_scored

    def spy(paths, pool, keyed):
        calls.append(keyed)
        return inner(paths, pool, keyed)

    monkeypatch.setattr(io, "_read_scored", spy)
    example = Path(__file__).resolve().parents[2] / "metrics" / "data" / "example"
    io.read_scored(example)
    assert calls == [True]
    calls.clear()
    sent = pl.read_parquet(example / "sentences.parquet")
    sent = sent.with_columns(
        pl.when(pl.int_range(pl.len()) == 3)
        .then(pl.lit("  "))
        .otherwise("item_id")
        .alias("item_id")
    )
    pl.read_parquet(example / "responses.parquet").write_parquet(tmp_path / "responses.parquet")
    sent.write_parquet(tmp_path / "sentences.parquet")
    with pytest.raises(UserError, match="sentences.parquet: column 'item_id' has 1 blank value"):
        io.read_scored(tmp_path)
    assert calls == [True, False]
    # A run with CSV sentences is never keyed: its files are read once, also when one is bad
    # (the keyed attempt gives up before reading anything).
    reads: list[str] = []
    read = io._read

    def read_spy(f, *args, **kwargs):
        reads.append(Path(f).name)
        return read(f, *args, **kwargs)

    monkeypatch.setattr(io, "_read", read_spy)
    (tmp_path / "sentences.parquet").unlink()
    sent.write_csv(tmp_path / "sentences.csv")
    calls.clear()
    with pytest.raises(UserError, match="sentences.csv: column 'item_id' has 1 blank value"):
        io.read_scored(tmp_path)
    assert sorted(reads) == ["responses.parquet", "sentences.csv"]


@pytest.mark.parametrize("second", ["parquet", "csv"])
def test_sharded_sentences_read_keyed_or_in_full_give_the_same_run(tmp_path, second) -> None:
    # Shards concatenate with their key hashes in file order (all Parquet: keyed), or all in
    # full when one shard is another format; either way the run equals the one-file run's.
    from pathlib import Path

    from metrics import analyze

    example = Path(__file__).resolve().parents[2] / "metrics" / "data" / "example"
    sent = pl.read_parquet(example / "sentences.parquet")
    (tmp_path / "sentences").mkdir()
    pl.read_parquet(example / "responses.parquet").write_parquet(tmp_path / "responses.parquet")
    cut = [0, 5000, 11000, sent.height]
    for i, (a, b) in enumerate(zip(cut, cut[1:])):
        shard = sent[a:b]
        if i == 1 and second == "csv":
            shard.write_csv(tmp_path / "sentences" / f"part-{i}.csv")
        else:
            shard.write_parquet(tmp_path / "sentences" / f"part-{i}.parquet")
    whole, sharded = analyze([example]), analyze([tmp_path])
    assert whole.mic_table.equals(sharded.mic_table)
    assert whole.metrics_json["models"] == sharded.metrics_json["models"]


@pytest.mark.parametrize("index_type", ["int8", "int16", "int32", "int64", "uint8", "uint32"])
def test_index_codes_are_the_indices_of_a_sliced_chunk(index_type: str) -> None:
    # A slice starts inside the buffer (offset 3): the view must start there, not at 0.
    import pyarrow as pa

    from metrics.io import _index_codes

    words = pa.array([f"w{i % 7}" for i in range(40)])
    chunk = words.dictionary_encode().cast(pa.dictionary(getattr(pa, index_type)(), pa.string()))[
        3:31
    ]
    codes = _index_codes(chunk.indices)
    assert codes.dtype == np.dtype(index_type) and len(codes) == 28
    np.testing.assert_array_equal(codes, [(i % 7) for i in range(3, 31)])


def test_index_codes_of_an_empty_chunk_without_a_data_buffer() -> None:
    import pyarrow as pa

    from metrics.io import _index_codes

    kind = pa.dictionary(pa.int32(), pa.string())
    empty = pa.DictionaryArray.from_buffers(kind, 0, [None, None], dictionary=pa.array(["x"]))
    codes = _index_codes(empty.indices)
    assert codes.dtype == np.int32 and len(codes) == 0
