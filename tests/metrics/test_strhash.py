"""The compiled XXH64 pass over Arrow string buffers against the plain-Python specification."""

from __future__ import annotations

import numba
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from metrics.bootstrap import rng, strhash
from metrics.bootstrap.strhash import (
    hash_pairs,
    hash_prefixed,
    hash_strings,
    xxh64_buffers,
    xxh64_reference,
)


def _want_pairs(prefix, firsts, lasts):
    """The specification's hash of each row's key text (`rng.pair_keys`)."""
    return [
        xxh64_reference(
            (prefix + rng.escape_key_part(f) + "\x1f" + v).encode("utf-8", "surrogatepass")
        )
        for f, v in zip(firsts, lasts)
    ]


def test_reference_matches_the_published_xxh64_vectors():
    # Test vectors of XXH64 with seed 0 (xxHash's own sanity checks): a wrong constant or
    # rotation in the reference would change them.
    assert xxh64_reference(b"") == 0xEF46DB3751D8E999
    assert xxh64_reference(b"a") == 0xD24EC4F1A98C6E5B
    assert xxh64_reference(b"abc") == 0x44BC2CF5AD770999


def test_kernel_equals_reference_on_every_length_and_alphabet():
    g = np.random.default_rng(7)
    alphabet = list("ab\x00\x1e\x1fé中😀 ")
    # lengths 0..140 cover every branch: <4, 4..7, 8..31, the 32-byte stripes and their tails
    values = ["".join(g.choice(alphabet, size=n)) for n in range(141) for _ in range(3)]
    got = hash_strings(np.array(values, dtype=object))
    want = np.array([xxh64_reference(v.encode("utf-8")) for v in values], dtype=np.uint64)
    assert np.array_equal(got, want)


def test_containers_give_the_same_hashes():
    values = ["x", "", "item-1", "a\x00", "a" * 40]
    want = hash_strings(values)
    assert np.array_equal(hash_strings(pl.Series(values)), want)
    assert np.array_equal(hash_strings(pa.array(values)), want)  # 32-bit offsets
    assert np.array_equal(hash_strings(pa.array(values, pa.string_view())), want)
    assert np.array_equal(hash_strings(pa.chunked_array([values[:2], values[2:]])), want)
    assert np.array_equal(hash_strings(pa.array(values).slice(2)), want[2:])  # offset array
    # a trailing NUL is kept (numpy "U" arrays would drop it)
    assert want[3] != hash_strings(["a"])[0]


def test_text_arrow_cannot_hold_takes_the_python_path_with_the_same_bytes():
    lone = "a\ud800b"  # a lone surrogate: not valid UTF-8, kept byte-exact by surrogatepass
    got = hash_strings(np.array([lone, "ok"], dtype=object))
    assert int(got[0]) == xxh64_reference(lone.encode("utf-8", "surrogatepass"))
    assert int(got[1]) == xxh64_reference(b"ok")
    keys = rng.item_keys([lone, "t"], ["1", "2"])
    assert int(keys[0]) == xxh64_reference(lone.encode("utf-8", "surrogatepass") + b"\x1f1")
    assert int(keys[1]) == xxh64_reference(b"t\x1f2")


def test_item_keys_escape_the_task_so_pairs_never_collide():
    # ("a\x1f", "b") and ("a", "\x1fb") would share the text "a\x1f\x1fb" without the escape
    k = rng.item_keys(["a\x1f", "a"], ["b", "\x1fb"])
    assert k[0] != k[1]
    assert int(k[0]) == xxh64_reference(b"a\x1e\x1f\x1fb")
    assert int(k[1]) == xxh64_reference(b"a\x1f\x1fb")
    # the Arrow path and the Python path build the same escaped text
    tasks = ["t\x1e", "t\x1f", "plain"]
    ids = ["1", "2", "3"]
    want = _want_pairs("", tasks, ids)
    assert rng.item_keys(tasks, ids).tolist() == want
    assert rng.item_keys(pl.Series(tasks), pl.Series(ids)).tolist() == want
    assert rng.pair_keys(tasks, ids, prefix="9\x1f").tolist() == _want_pairs("9\x1f", tasks, ids)


def test_kernel_reads_raw_buffers():
    data = np.frombuffer(b"abcabc", dtype=np.uint8).copy()
    offsets = np.array([0, 3, 3, 6], dtype=np.int64)
    assert xxh64_buffers(offsets, data).tolist() == [
        xxh64_reference(b"abc"),
        xxh64_reference(b""),
        xxh64_reference(b"abc"),
    ]


def test_prefixed_kernel_equals_hashing_the_joined_text():
    g = np.random.default_rng(3)
    prefixes = ["", "gsm8k\x1f", "a much longer task name past thirty-two bytes\x1f", "é\x1f"]
    values = ["".join(g.choice(list("xyz\x1fé"), size=n)) for n in range(60)]
    index = g.integers(0, len(prefixes), len(values))
    got = hash_prefixed(prefixes, index, values)
    want = [xxh64_reference((prefixes[k] + v).encode()) for k, v in zip(index, values)]
    assert got.tolist() == want


@pytest.mark.parametrize("alphabet", ["abé", "ab\x1e\x1fé"])  # without / with escaped bytes
def test_pair_kernel_equals_hashing_the_escaped_joined_text(alphabet):
    g = np.random.default_rng(4)
    firsts = ["".join(g.choice(list(alphabet), size=n)) for n in g.integers(0, 40, 70)]
    lasts = ["".join(g.choice(list("xyz\x1fé"), size=n)) for n in g.integers(0, 40, 70)]
    assert hash_pairs("7\x1f", firsts, lasts).tolist() == _want_pairs("7\x1f", firsts, lasts)


def test_python_strings_are_hashed_in_slices_with_the_same_text(monkeypatch):
    # Python strings are joined by NUL a slice at a time and hashed from the joined bytes: every
    # length 0..40 of both parts (the word copies' tails), escaped bytes in the first part,
    # non-ASCII text, and slice edges inside the rows (a slice of 7 rows, 328 rows).
    monkeypatch.setattr(strhash, "OBJECT_SLICE", 7)
    g = np.random.default_rng(5)
    sizes = np.tile(np.arange(41), 8)  # every length 8 times, in a different order per part
    firsts = ["".join(g.choice(list("ab\x1e\x1fé"), size=n)) for n in g.permutation(sizes)]
    lasts = ["".join(g.choice(list("xyz\x1f中"), size=n)) for n in g.permutation(sizes)]
    want = _want_pairs("3\x1f", firsts, lasts)
    got = strhash.hash_object_pairs("3\x1f", np.array(firsts, dtype=object), lasts)
    assert got is not None and got.tolist() == want
    assert rng.pair_keys(firsts, lasts, prefix="3\x1f").tolist() == want
    assert rng.pair_keys(pl.Series(firsts), pl.Series(lasts), prefix="3\x1f").tolist() == want


@pytest.mark.parametrize(
    "odd",
    ["a\x00b", "\ud800", 7, None],  # a NUL (the separator), a lone surrogate, not a str
    ids=["nul", "surrogate", "int", "none"],
)
def test_values_the_slices_cannot_join_take_the_general_path(odd):
    firsts = ["t", "u", "v"]
    lasts = ["1", odd, "3"]
    assert strhash.hash_object_pairs("", firsts, lasts) is None
    # pair_keys then builds the same text another way (str() of a non-string, as always)
    want = _want_pairs("", firsts, [str(v) for v in lasts])
    assert rng.pair_keys(firsts, np.array(lasts, dtype=object)).tolist() == want


def test_columns_of_different_lengths_are_refused():
    # Python strings (the NUL-joined slices) and Arrow arrays (their buffers) share one check.
    with pytest.raises(ValueError, match="2 first parts but 3 last parts"):
        strhash.hash_object_pairs("", ["a", "b"], ["1", "2", "3"])
    with pytest.raises(ValueError, match="2 first parts but 3 last parts"):
        rng.pair_keys(pa.array(["a", "b"]), pa.array(["1", "2", "3"]))


def test_separator_offsets_find_every_nul_byte():
    # The word-at-a-time zero test against numpy, on bytes where 0x00, 0x01 and 0x80 (the
    # classic trick's false positives) sit at every position of a word, and on every tail length.
    g = np.random.default_rng(6)
    for size in range(0, 90):
        data = g.choice(np.array([0, 1, 0x7F, 0x80, 0xFF, 65], dtype=np.uint8), size=size)
        nuls = np.flatnonzero(data == 0)
        n = nuls.size + 1
        offsets, found = strhash.separator_offsets(data, n)
        assert found == nuls.size
        assert offsets.tolist() == [0, *(nuls + 1).tolist(), size + 1]


def test_word_loads_refuse_an_array_whose_bytes_are_not_contiguous():
    # The unaligned word loads address data + p: a strided array must not compile to them.
    data = np.frombuffer(b"aXbXcX", dtype=np.uint8)[::2]
    with pytest.raises(numba.TypingError):
        xxh64_buffers(np.array([0, 3], dtype=np.int64), data)
    assert xxh64_buffers(np.array([0, 3], dtype=np.int64), data.copy()).tolist() == [
        xxh64_reference(b"abc")
    ]
