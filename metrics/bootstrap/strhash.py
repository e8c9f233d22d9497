"""Stable 64-bit hashes of strings in one compiled pass over an Arrow string buffer.

The hash is XXH64 with seed 0 (Yann Collet's xxHash, 64-bit variant, as specified in
https://github.com/Cyan4973/xxHash/blob/dev/doc/xxhash_spec.md) of the string's UTF-8 bytes.
It is fixed by that specification, so a key depends only on the text: not on the process (unlike
Python's ``hash``, which is salted per process), the library version (unlike polars' ``hash``,
which may change between releases), the row order or the machine.

Why not blake2b: the previous keys called ``hashlib.blake2b`` once per distinct string from
Python, about 2.7 microseconds per item; the kernel below reads the Arrow offsets and bytes
directly and runs at tens of nanoseconds per string. Keys are not a security boundary (a key only
seeds bootstrap draws), so a fast non-cryptographic hash with full avalanche is the right tool.

:func:`xxh64_reference` is a plain-Python transcription of the specification, used by the tests to
check the kernel string by string (and against the specification's published test vectors).
"""

from __future__ import annotations

import sys
from typing import Any

import numba
import numpy as np
from llvmlite import ir
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import intrinsic

__all__ = [
    "arrow_strings",
    "check_pair_lengths",
    "hash_object_pairs",
    "hash_prefixed",
    "hash_strings",
    "hash_pairs",
    "separator_offsets",
    "utf8_buffers",
    "xxh64_buffers",
    "xxh64_pairs",
    "xxh64_prefixed",
    "xxh64_reference",
]

_P1 = np.uint64(0x9E3779B185EBCA87)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P3 = np.uint64(0x165667B19E3779F9)
_P4 = np.uint64(0x85EBCA77C2B2AE63)
_P5 = np.uint64(0x27D4EB2F165667C5)
_M64 = (1 << 64) - 1


@numba.njit(inline="always", cache=True)
def _rotl(x: np.uint64, r: int) -> np.uint64:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


def _unaligned(bits: int) -> tuple[Any, Any]:
    """Intrinsics ``load(data, p)`` and ``store(data, p, value)`` of the little-endian `bits`-bit
    unsigned word at byte ``p`` of a uint8 array: one unaligned machine load or store (strings
    start anywhere in the buffer), byte-swapped on a big-endian machine. XXH64 reads
    little-endian words; LLVM does not merge numba's byte-by-byte form into one load."""
    word = ir.IntType(bits)
    nbtype = numba.types.uint64 if bits == 64 else numba.types.uint32
    swap = sys.byteorder == "big"

    def bytes_array(data) -> bool:
        # The address is data + p: right for a contiguous uint8 array only. Any other array does
        # not type (a compile error, never a read beside the bytes meant).
        return (
            isinstance(data, numba.types.Array)
            and data.dtype == numba.types.uint8
            and data.ndim == 1
            and data.layout == "C"
        )

    def pointer(context, builder, aryty, ary, p, pty):
        data = context.make_array(aryty)(context, builder, ary).data
        index = context.cast(builder, p, pty, numba.types.intp)
        return builder.bitcast(builder.gep(data, [index]), word.as_pointer())

    @intrinsic
    def load(typingctx, data, p):
        if not bytes_array(data):
            return None

        def codegen(context, builder, signature, args):
            ptr = pointer(context, builder, signature.args[0], args[0], args[1], signature.args[1])
            value = builder.load(ptr, align=1)
            return builder.bswap(value) if swap else value

        return nbtype(data, p), codegen

    @intrinsic
    def store(typingctx, data, p, value):
        if not bytes_array(data):
            return None

        def codegen(context, builder, signature, args):
            ptr = pointer(context, builder, signature.args[0], args[0], args[1], signature.args[1])
            value = context.cast(builder, args[2], signature.args[2], nbtype)
            builder.store(builder.bswap(value) if swap else value, ptr, align=1)
            return context.get_dummy_value()

        return numba.types.void(data, p, value), codegen

    return load, store


_read64, _write64 = _unaligned(64)
_read32_word, _write32 = _unaligned(32)


@numba.njit(inline="always", cache=True)
def _read32(data: np.ndarray, p: int) -> np.uint64:
    return np.uint64(_read32_word(data, p))


@numba.njit(inline="always", cache=True)
def _round(acc: np.uint64, lane: np.uint64) -> np.uint64:
    acc = acc + lane * _P2
    acc = _rotl(acc, 31)
    return acc * _P1


@numba.njit(inline="always", cache=True)
def _merge(acc: np.uint64, val: np.uint64) -> np.uint64:
    acc = acc ^ _round(np.uint64(0), val)
    return acc * _P1 + _P4


@numba.njit(inline="always", cache=True)
def _xxh64(data: np.ndarray, p: int, end: int) -> np.uint64:
    """XXH64 (seed 0) of ``data[p:end]``."""
    length = end - p
    if length >= 32:
        v1 = _P1 + _P2
        v2 = _P2
        v3 = np.uint64(0)
        v4 = np.uint64(0) - _P1
        limit = end - 32
        while p <= limit:
            v1 = _round(v1, _read64(data, p))
            v2 = _round(v2, _read64(data, p + 8))
            v3 = _round(v3, _read64(data, p + 16))
            v4 = _round(v4, _read64(data, p + 24))
            p += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        h = _merge(h, v1)
        h = _merge(h, v2)
        h = _merge(h, v3)
        h = _merge(h, v4)
    else:
        h = _P5
    h = h + np.uint64(length)
    while p + 8 <= end:
        h = h ^ _round(np.uint64(0), _read64(data, p))
        h = _rotl(h, 27) * _P1 + _P4
        p += 8
    if p + 4 <= end:
        h = h ^ (_read32(data, p) * _P1)
        h = _rotl(h, 23) * _P2 + _P3
        p += 4
    while p < end:
        h = h ^ (np.uint64(data[p]) * _P5)
        h = _rotl(h, 11) * _P1
        p += 1
    h = h ^ (h >> np.uint64(33))
    h = h * _P2
    h = h ^ (h >> np.uint64(29))
    h = h * _P3
    return h ^ (h >> np.uint64(32))


@numba.njit(cache=True, nogil=True)
def xxh64_buffers(offsets: np.ndarray, data: np.ndarray) -> np.ndarray:
    """XXH64 (seed 0) of each string ``data[offsets[i]:offsets[i + 1]]``.

    Args:
        offsets: int64 array of ``n + 1`` byte offsets (an Arrow large_string offsets buffer).
        data: uint8 array of the concatenated UTF-8 bytes.

    Returns:
        A uint64 array of ``n`` hashes.
    """
    n = offsets.shape[0] - 1
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        out[i] = _xxh64(data, offsets[i], offsets[i + 1])
    return out


@numba.njit(cache=True, nogil=True)
def _join_prefixed(
    prefix_offsets: np.ndarray,
    prefix_data: np.ndarray,
    prefix_index: np.ndarray,
    offsets: np.ndarray,
    data: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """The buffers of ``prefix[prefix_index[i]] + string[i]``: one sequential copy."""
    n = offsets.shape[0] - 1
    out_off = np.empty(n + 1, dtype=np.int64)
    out_off[0] = 0
    for i in range(n):
        k = prefix_index[i]
        size = prefix_offsets[k + 1] - prefix_offsets[k] + offsets[i + 1] - offsets[i]
        out_off[i + 1] = out_off[i] + size
    out = np.empty(out_off[n], dtype=np.uint8)
    for i in range(n):
        k = prefix_index[i]
        q = out_off[i]
        for j in range(prefix_offsets[k], prefix_offsets[k + 1]):
            out[q] = prefix_data[j]
            q += 1
        for j in range(offsets[i], offsets[i + 1]):
            out[q] = data[j]
            q += 1
    return out_off, out


@numba.njit(cache=True, nogil=True)
def xxh64_prefixed(
    prefix_offsets: np.ndarray,
    prefix_data: np.ndarray,
    prefix_index: np.ndarray,
    offsets: np.ndarray,
    data: np.ndarray,
) -> np.ndarray:
    """XXH64 (seed 0) of ``prefix[prefix_index[i]] + string[i]`` for each row ``i``.

    The prefixes are few (one per task), the strings many (one per item): the joined text is
    built by one compiled copy (much cheaper than joining Python or Arrow strings) and hashed by
    :func:`xxh64_buffers`.

    Args:
        prefix_offsets: int64 offsets of the distinct prefixes.
        prefix_data: their UTF-8 bytes.
        prefix_index: int64 prefix number per row.
        offsets: int64 offsets of the per-row strings.
        data: their UTF-8 bytes.

    Returns:
        A uint64 array with one hash per row.
    """
    out_off, out = _join_prefixed(prefix_offsets, prefix_data, prefix_index, offsets, data)
    return xxh64_buffers(out_off, out)


_ESC = 0x1E  # KEY_ESC and KEY_SEP of metrics.bootstrap.rng, as bytes
_SEP = 0x1F


@numba.njit(inline="always", cache=True)
def _copy(dst: np.ndarray, q: int, src: np.ndarray, start: int, end: int) -> int:
    """Copy ``src[start:end]`` to ``dst[q:]``; returns the end in `dst`.

    Whole words: 8 bytes at a time, then one last word that ends where the text ends (it may
    rewrite bytes just copied, with the same values), so a 13-byte name is two 8-byte copies, a
    5-byte one two 4-byte copies; only texts under 4 bytes go byte by byte.
    """
    n = end - start
    if n >= 8:
        k = 0
        while k + 8 < n:
            _write64(dst, q + k, _read64(src, start + k))
            k += 8
        _write64(dst, q + n - 8, _read64(src, end - 8))
    elif n >= 4:
        _write32(dst, q, _read32_word(src, start))
        _write32(dst, q + n - 4, _read32_word(src, end - 4))
    else:
        for k in range(n):
            dst[q + k] = src[start + k]
    return q + n


@numba.njit(cache=True, nogil=True)
def xxh64_pairs(
    prefix: np.ndarray,
    first_offsets: np.ndarray,
    first_data: np.ndarray,
    first_gap: int,
    offsets: np.ndarray,
    data: np.ndarray,
    gap: int,
) -> np.ndarray:
    """XXH64 (seed 0) of ``prefix + escape(first[i]) + "\\x1f" + string[i]`` for each row ``i``.

    ``escape`` puts ``\\x1e`` before every ``\\x1e`` and ``\\x1f`` byte (as
    ``rng.escape_key_part``; UTF-8 never uses those bytes inside a multi-byte character, so
    escaping bytes is escaping characters). Each row's text is built in a small scratch buffer
    that stays in L1 and hashed from there: no joined copy of the whole column, and no
    dictionary encoding of the first parts.

    Args:
        prefix: UTF-8 bytes put in front of every text (not escaped).
        first_offsets: int64 offsets of the first parts (task names).
        first_data: their UTF-8 bytes.
        first_gap: Bytes between one first part and the next (0 for an Arrow buffer, 1 for
            values joined by a separator): first part ``i`` is
            ``first_data[first_offsets[i]:first_offsets[i + 1] - first_gap]``.
        offsets: int64 offsets of the last parts (item ids).
        data: their UTF-8 bytes.
        gap: The same for the last parts.

    Returns:
        A uint64 array with one hash per row.
    """
    n = offsets.shape[0] - 1
    longest = 0
    for i in range(n):
        size = 2 * (first_offsets[i + 1] - first_offsets[i]) + offsets[i + 1] - offsets[i]
        longest = max(longest, size)
    scratch = np.empty(prefix.shape[0] + longest + 1, dtype=np.uint8)
    p0 = _copy(scratch, 0, prefix, 0, prefix.shape[0])
    # Task names almost never hold the two escaped bytes: then copy them a word at a time.
    # (_ESC and _SEP differ in the last bit only; a loop without an exit vectorizes.)
    escaped = 0
    for j in range(first_data.shape[0]):
        escaped |= (first_data[j] | 1) == _SEP
    plain = escaped == 0
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        start, end = first_offsets[i], first_offsets[i + 1] - first_gap
        if plain:
            q = _copy(scratch, p0, first_data, start, end)
        else:
            q = p0
            for j in range(start, end):
                c = first_data[j]
                if c == _ESC or c == _SEP:
                    scratch[q] = _ESC
                    q += 1
                scratch[q] = c
                q += 1
        scratch[q] = _SEP
        q = _copy(scratch, q + 1, data, offsets[i], offsets[i + 1] - gap)
        out[i] = _xxh64(scratch, 0, q)
    return out


# ----------------------------------------------------------------------------- reference


def _rotl_ref(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def _round_ref(acc: int, lane: int) -> int:
    acc = (acc + lane * int(_P2)) & _M64
    return (_rotl_ref(acc, 31) * int(_P1)) & _M64


def xxh64_reference(data: bytes) -> int:
    """XXH64 with seed 0 of `data`, transcribed from the specification in plain Python."""
    p1, p2, p3, p4, p5 = (int(c) for c in (_P1, _P2, _P3, _P4, _P5))
    n = len(data)
    p = 0
    if n >= 32:
        v = [(p1 + p2) & _M64, p2, 0, (-p1) & _M64]
        while p + 32 <= n:
            for lane in range(4):
                word = int.from_bytes(data[p + 8 * lane : p + 8 * lane + 8], "little")
                v[lane] = _round_ref(v[lane], word)
            p += 32
        h = _rotl_ref(v[0], 1) + _rotl_ref(v[1], 7) + _rotl_ref(v[2], 12) + _rotl_ref(v[3], 18)
        h &= _M64
        for lane in range(4):
            h = ((h ^ _round_ref(0, v[lane])) * p1 + p4) & _M64
    else:
        h = p5
    h = (h + n) & _M64
    while p + 8 <= n:
        h ^= _round_ref(0, int.from_bytes(data[p : p + 8], "little"))
        h = (_rotl_ref(h, 27) * p1 + p4) & _M64
        p += 8
    if p + 4 <= n:
        h ^= (int.from_bytes(data[p : p + 4], "little") * p1) & _M64
        h = (_rotl_ref(h, 23) * p2 + p3) & _M64
        p += 4
    while p < n:
        h ^= (data[p] * p5) & _M64
        h = (_rotl_ref(h, 11) * p1) & _M64
        p += 1
    h ^= h >> 33
    h = (h * p2) & _M64
    h ^= h >> 29
    h = (h * p3) & _M64
    return h ^ (h >> 32)


# ----------------------------------------------------------------------------- buffers


def _python_buffers(values: Any) -> tuple[np.ndarray, np.ndarray]:
    # The slow path, for text Arrow refuses (lone surrogates, kept byte-exact by surrogatepass)
    # and for non-string values (hashed as str(value), as the keys always were).
    encoded = [(v if type(v) is str else str(v)).encode("utf-8", "surrogatepass") for v in values]
    lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets, np.frombuffer(b"".join(encoded), dtype=np.uint8)


def _ascii_array(obj: np.ndarray) -> Any:
    """Python str values as an Arrow array built from one joined ASCII buffer, or None.

    Arrow's conversion of a Python object array costs ~100 ns per value; joining the values and
    encoding once costs a few: for ASCII text (one byte per character) the offsets are the
    cumulative lengths in characters.
    """
    import pyarrow as pa

    values = obj.tolist()
    try:
        joined = "".join(values)  # TypeError on any non-str value
    except TypeError:
        return None
    if not joined.isascii():
        return None
    offsets = np.zeros(len(values) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, values), dtype=np.int64, count=len(values)), out=offsets[1:])
    data = joined.encode("ascii")
    return pa.LargeStringArray.from_buffers(len(values), pa.py_buffer(offsets), pa.py_buffer(data))


def arrow_strings(values: Any) -> Any:
    """`values` as a pyarrow large_string array without nulls, or None if Arrow cannot hold it.

    None means: fall back to Python (text with lone surrogates, non-string values, nulls).

    Args:
        values: A polars Series or pyarrow array of strings, or any array-like of str.

    Returns:
        A ``pyarrow.LargeStringArray`` or None.
    """
    import pyarrow as pa  # lazy: pyarrow is only needed when keys are built

    if hasattr(values, "to_arrow") and not isinstance(values, (pa.Array, pa.ChunkedArray)):
        values = values.to_arrow()  # polars Series
    if isinstance(values, (pa.Array, pa.ChunkedArray)):
        arr = values
    else:
        obj = np.asarray(values, dtype=object).reshape(-1)
        fast = _ascii_array(obj)
        if fast is not None:
            return fast
        try:
            arr = pa.array(obj, type=pa.large_string(), from_pandas=False)
        except (pa.ArrowException, UnicodeError, TypeError):
            return None
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        return None
    if pa.types.is_string(arr.type) or pa.types.is_string_view(arr.type):
        arr = arr.cast(pa.large_string())
    if not pa.types.is_large_string(arr.type):
        return None
    return arr


def utf8_buffers(values: Any) -> tuple[np.ndarray, np.ndarray]:
    """The int64 offsets and uint8 UTF-8 bytes of a string array, zero-copy where Arrow allows.

    Args:
        values: A polars Series or pyarrow array of strings, or any array-like of str.

    Returns:
        ``(offsets, data)`` with ``data[offsets[i]:offsets[i + 1]]`` the bytes of value ``i``.
    """
    arr = arrow_strings(values)
    if arr is None:
        if hasattr(values, "to_list"):
            values = values.to_list()
        elif hasattr(values, "to_pylist"):
            values = values.to_pylist()
        return _python_buffers(np.asarray(values, dtype=object).reshape(-1))
    _, off_buf, data_buf = arr.buffers()
    offsets = np.frombuffer(off_buf, dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    data = (
        np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    )
    return offsets, data


def _writable(a: np.ndarray) -> np.ndarray:
    # Arrow buffers are read-only, and numba compiles a separate (slow, first-run) specialization
    # for read-only arrays: one signature for the kernel keeps the warmed cache valid.
    if a.flags.writeable and a.flags.c_contiguous:
        return a
    return np.array(a, copy=True, order="C")


def hash_strings(values: Any) -> np.ndarray:
    """XXH64 (seed 0) of the UTF-8 bytes of each string, one uint64 per value.

    Args:
        values: A polars Series or pyarrow array of strings, or any array-like of str.

    Returns:
        A uint64 array, one hash per value.
    """
    offsets, data = utf8_buffers(values)
    if offsets.shape[0] <= 1:
        return np.zeros(0, dtype=np.uint64)
    return xxh64_buffers(_writable(offsets), _writable(data))


def hash_prefixed(prefixes: list[str], prefix_index: np.ndarray, values: Any) -> np.ndarray:
    """XXH64 (seed 0) of ``prefixes[prefix_index[i]] + values[i]`` per row, in one pass.

    Args:
        prefixes: The distinct prefixes (Python str).
        prefix_index: Prefix number per row (integer array).
        values: The per-row strings (as for :func:`hash_strings`).

    Returns:
        A uint64 array, one hash per row.
    """
    p_off, p_data = _python_buffers(prefixes)
    offsets, data = utf8_buffers(values)
    if offsets.shape[0] <= 1:
        return np.zeros(0, dtype=np.uint64)
    return xxh64_prefixed(
        _writable(p_off),
        _writable(p_data),
        _writable(np.asarray(prefix_index, dtype=np.int64)),
        _writable(offsets),
        _writable(data),
    )


def hash_pairs(prefix: str, firsts: Any, lasts: Any) -> np.ndarray:
    """XXH64 (seed 0) of ``prefix + escape_key_part(first) + KEY_SEP + last`` per row.

    Args:
        prefix: Text put in front of every key (not escaped).
        firsts: First part per row (escaped), as for :func:`hash_strings`.
        lasts: Last part per row, same length.

    Returns:
        A uint64 array, one hash per row.
    """
    a_off, a_data = utf8_buffers(firsts)
    b_off, b_data = utf8_buffers(lasts)
    return _pairs_kernel(prefix, (a_off, a_data, 0), (b_off, b_data, 0))


def _pairs_kernel(prefix: str, first: tuple, last: tuple) -> np.ndarray:
    # `first` and `last` are (offsets, data, gap) as xxh64_pairs takes them. Arrow's buffers are
    # read-only: the kernel takes them as they are (copying the columns to get the writable
    # signature would cost a third of the kernel's time), and the other paths' buffers are passed
    # read-only too, so one compiled signature (the warmed one) serves them all.
    if last[0].shape[0] <= 1:
        return np.zeros(0, dtype=np.uint64)
    return xxh64_pairs(
        np.frombuffer(prefix.encode("utf-8", "surrogatepass"), dtype=np.uint8),
        _readonly(first[0]), _readonly(first[1]), first[2],
        _readonly(last[0]), _readonly(last[1]), last[2],
    )  # fmt: skip


#: Rows per slice of :func:`hash_object_pairs`. A slice's list and joined text (~100 KB for
#: ids of ~13 characters) stay under the C allocator's 128 KB threshold for fresh mappings, so
#: each slice reuses the memory the previous one freed; one pass over 200k rows would ask the
#: system for ~10 MB of fresh pages, and on this kind of VM a fresh 4 KB page costs ~2
#: microseconds (200k pairs: ~22 ms in one slice, 15-16 ms in slices of 16k, 14 ms of 8k).
OBJECT_SLICE = 8192


_LOW7 = np.uint64(0x7F7F7F7F7F7F7F7F)


@numba.njit(cache=True, nogil=True)
def separator_offsets(data: np.ndarray, n: int) -> tuple[np.ndarray, int]:
    """Offsets of `n` values joined by NUL bytes, and the number of NULs found.

    Value ``i`` is ``data[offsets[i]:offsets[i + 1] - 1]`` when ``n - 1`` NULs are found; more
    mean a value holds a NUL, and then the offsets are meaningless. Eight bytes at a time:
    ``~(((w & 0x7f..) + 0x7f..) | w | 0x7f..)`` has the top bit of each byte set exactly where
    that byte of `w` is zero (no carry crosses a byte, unlike the shorter ``(w - 0x01..) & ~w``).
    """
    offsets = np.empty(n + 1, dtype=np.int64)
    offsets[0] = 0
    found = 0
    size = data.shape[0]
    j = 0
    while j + 8 <= size:
        w = _read64(data, j)
        z = ~(((w & _LOW7) + _LOW7) | w | _LOW7)
        while z != 0:
            found += 1
            if found < n:
                offsets[found] = j + (trailing_zeros(z) >> 3) + 1
            z &= z - np.uint64(1)
        j += 8
    while j < size:
        if data[j] == 0:
            found += 1
            if found < n:
                offsets[found] = j + 1
        j += 1
    offsets[n] = size + 1
    return offsets, found


def _separated(values: list) -> tuple[np.ndarray, np.ndarray] | None:
    """Offsets and UTF-8 bytes of str values joined by NUL (value ``i`` is
    ``data[offsets[i]:offsets[i + 1] - 1]``), or None if a value is not a str, holds a NUL
    (which would make the separators ambiguous) or a lone surrogate."""
    try:
        text = "\x00".join(values).encode("utf-8")
    except (TypeError, UnicodeEncodeError):
        return None
    data = np.frombuffer(text, dtype=np.uint8)
    offsets, found = separator_offsets(data, len(values))
    return (offsets, data) if found == len(values) - 1 else None


def hash_object_pairs(prefix: str, firsts: Any, lasts: Any) -> np.ndarray | None:
    """:func:`hash_pairs` of Python strings (a list, or a numpy object array), or None.

    Arrow's conversion of Python strings costs ~40 ns per value, and a joined text's lengths
    another ~30 ns from Python; here each slice of values is joined by NUL and encoded once, and
    the separators' positions are the offsets (:func:`separator_offsets`). None means: some
    value is not a str, holds a NUL or a lone surrogate; the caller then takes
    :func:`hash_pairs`' path.

    Args:
        prefix: Text put in front of every key (not escaped).
        firsts: First part per row (escaped): a list, tuple or numpy array.
        lasts: Last part per row, same length.

    Returns:
        A uint64 array with one hash per row, or None.

    Raises:
        ValueError: If the two differ in length.
    """
    a = firsts if isinstance(firsts, list) else np.asarray(firsts, dtype=object).reshape(-1)
    b = lasts if isinstance(lasts, list) else np.asarray(lasts, dtype=object).reshape(-1)
    check_pair_lengths(len(a), len(b))
    out = np.empty(len(b), dtype=np.uint64)
    for start in range(0, len(b), OBJECT_SLICE):
        stop = min(len(b), start + OBJECT_SLICE)
        first = _separated(_as_list(a[start:stop]))
        last = _separated(_as_list(b[start:stop]))
        if first is None or last is None:
            return None
        out[start:stop] = _pairs_kernel(prefix, (*first, 1), (*last, 1))
    return out


def check_pair_lengths(n_first: int, n_last: int) -> None:
    """Raise ValueError unless there are as many first parts as last parts (the pair kernel
    reads both parts' offsets for every row: a shorter column would be read past its end)."""
    if n_first != n_last:
        raise ValueError(f"pair_keys: {n_first} first parts but {n_last} last parts")


def _as_list(values: Any) -> list:
    return values if isinstance(values, list) else values.tolist()


def _readonly(a: np.ndarray) -> np.ndarray:
    view = np.ascontiguousarray(a).view()
    view.flags.writeable = False
    return view
