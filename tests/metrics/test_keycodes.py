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
    uniq, first, count = keycodes.groups_with_rows(keys, has)
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
