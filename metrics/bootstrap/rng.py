"""A stateless, counter-based random number generator for bootstrap weights.

Every random number is a pure function of its key ``(seed, stratum_key, item_key, replicate)``.
Nothing is carried from one draw to the next, so a draw does not depend on thread count, shard
order, row order or machine (SPEC section 5), and two models scored on the same items receive the
same draws: the bootstrap is paired for free.

Construction (why this mix):
    ``mix64`` is the SplitMix64 output function (Stafford's "Mix13" variant of the MurmurHash3
    finalizer): two xor-shift / odd-multiply rounds. It is a bijection of the 64-bit words with
    full avalanche (each input bit flips each output bit with probability close to 1/2), and
    SplitMix64, which is exactly this function applied to a Weyl sequence, passes BigCrush.

    The key is absorbed in two stages so that the inner loop of a kernel costs one ``mix64`` per
    draw:

    * ``stream_key(seed, stratum, item)`` chains three ``mix64`` calls (one per key word). It is
      computed once per item (per stratum position for the multinomial scheme), not per replicate.
    * ``replicate_key(replicate)`` is ``mix64`` of a Weyl step, computed once per replicate.
    * a draw is ``mix64(stream_key ^ replicate_key)``.

    Both halves are already avalanche-mixed 64-bit words, so their XOR is a well-spread input to
    the final ``mix64``. Unlike a Weyl counter (``stream + replicate * gamma``), two item streams
    cannot be shifted copies of each other: a coincidence ``K_i ^ R_b == K_j ^ R_c`` repeats for
    no other pair of replicates, because the ``R_b`` are hashes, not an arithmetic sequence.
    The cost is one ``mix64`` (two 64-bit multiplies) per draw, which numba vectorizes.

Uniform numbers use the top 53 bits: ``u = (bits >> 11) * 2**-53`` in ``[0, 1)``.

Poisson(1) weights use exact inversion of the CDF on that 53-bit grid:
``w = #{k : u >= F(k)}`` where ``F(k) = P(X <= k)``. The thresholds ``ceil(F(k) * 2**53)`` are
computed once with 60-digit decimal arithmetic, so ``P(w = k)`` equals the true Poisson(1)
probability up to the 2**-53 resolution of ``u``; all mass beyond ``k = 17`` (below 2**-53) goes
to 17. Comparing integers avoids any float rounding.

Each numba function has a plain numpy reference (suffix ``_reference``) computing bit-identical
values over arrays; tests compare the two.
"""

from __future__ import annotations

from decimal import ROUND_CEILING, Decimal, localcontext
from typing import Any

import numba
import numpy as np
import numpy.typing as npt

__all__ = [
    "POISSON1_MAX_WEIGHT",
    "POISSON1_THRESHOLDS",
    "bits_to_uniform",
    "bits_to_uniform_reference",
    "counter_bits",
    "counter_bits_reference",
    "counter_poisson1",
    "counter_uniform",
    "counter_uniform_reference",
    "item_keys",
    "mix64",
    "mix64_reference",
    "poisson1_from_bits",
    "poisson1_from_bits_reference",
    "poisson1_weight",
    "poisson1_weight_reference",
    "replicate_key",
    "replicate_key_reference",
    "stratum_keys",
    "stream_key",
    "stream_key_reference",
]

_U64 = np.uint64
_GAMMA = _U64(0x9E3779B97F4A7C15)  # 2**64 / golden ratio, the SplitMix64 increment
_MUL1 = _U64(0xBF58476D1CE4E5B9)
_MUL2 = _U64(0x94D049BB133111EB)
_SHIFT30 = _U64(30)
_SHIFT27 = _U64(27)
_SHIFT31 = _U64(31)
_SHIFT11 = _U64(11)
# Domain constants keep the seed word and the replicate counter from meeting the same inputs.
_SEED_DOMAIN = _U64(0x6D69632D626F6F74)  # "mic-boot"
_REPLICATE_DOMAIN = _U64(0x7265706C69636174)  # "replicat"
_TWO_POW_MINUS_53 = 2.0**-53


def _poisson1_thresholds() -> np.ndarray:
    """``ceil(P(X <= k) * 2**53)`` for X ~ Poisson(1), for every k whose value is below 2**53."""
    with localcontext() as ctx:
        ctx.prec = 60
        e_inv = Decimal(-1).exp()
        scale = Decimal(2) ** 53
        cdf = Decimal(0)
        term = Decimal(1)
        thresholds: list[int] = []
        k = 0
        while True:
            if k > 0:
                term /= k
            cdf += e_inv * term
            t = int((cdf * scale).to_integral_value(rounding=ROUND_CEILING))
            if t >= 2**53:
                break
            thresholds.append(t)
            k += 1
    return np.array(thresholds, dtype=np.uint64)


#: Integer thresholds on the top 53 bits: ``w = #{k : (bits >> 11) >= POISSON1_THRESHOLDS[k]}``.
POISSON1_THRESHOLDS: np.ndarray = _poisson1_thresholds()
#: The largest weight the inversion can return (all mass beyond it is below 2**-53).
POISSON1_MAX_WEIGHT: int = int(POISSON1_THRESHOLDS.size)
# The same thresholds shifted to compare against the full 64-bit word (low 11 bits are zero,
# so ``bits >= t << 11`` iff ``bits >> 11 >= t``); the kernels use these.
_THRESHOLDS_SHIFTED = POISSON1_THRESHOLDS << _SHIFT11
_THRESHOLDS_FLOAT = POISSON1_THRESHOLDS.astype(np.float64) * _TWO_POW_MINUS_53


# ----------------------------------------------------------------------------- numba versions


@numba.njit(inline="always", cache=True)
def mix64(z: np.uint64) -> np.uint64:
    """SplitMix64 output function: a bijective 64-bit avalanche mix."""
    z = (z ^ (z >> _SHIFT30)) * _MUL1
    z = (z ^ (z >> _SHIFT27)) * _MUL2
    return z ^ (z >> _SHIFT31)


@numba.njit(inline="always", cache=True)
def _absorb(h: np.uint64, word: np.uint64) -> np.uint64:
    return mix64((h ^ word) + _GAMMA)


@numba.njit(inline="always", cache=True)
def stream_key(seed: np.uint64, stratum_key: np.uint64, item_key: np.uint64) -> np.uint64:
    """The per-item half of the key: a hash of ``(seed, stratum_key, item_key)``."""
    h = mix64(np.uint64(seed) ^ _SEED_DOMAIN)
    h = _absorb(h, np.uint64(stratum_key))
    return _absorb(h, np.uint64(item_key))


@numba.njit(inline="always", cache=True)
def replicate_key(replicate: np.int64) -> np.uint64:
    """The per-replicate half of the key: ``mix64`` of a Weyl step."""
    return mix64((np.uint64(replicate) + _U64(1)) * _GAMMA ^ _REPLICATE_DOMAIN)


@numba.njit(inline="always", cache=True)
def counter_bits(
    seed: np.uint64, stratum_key: np.uint64, item_key: np.uint64, replicate: np.int64
) -> np.uint64:
    """64 random bits for the key ``(seed, stratum_key, item_key, replicate)``."""
    return mix64(stream_key(seed, stratum_key, item_key) ^ replicate_key(replicate))


@numba.njit(inline="always", cache=True)
def bits_to_uniform(bits: np.uint64) -> float:
    """The top 53 bits as a float64 in ``[0, 1)``."""
    return np.float64(bits >> _SHIFT11) * _TWO_POW_MINUS_53


@numba.njit(inline="always", cache=True)
def counter_uniform(
    seed: np.uint64, stratum_key: np.uint64, item_key: np.uint64, replicate: np.int64
) -> float:
    """A uniform float64 in ``[0, 1)`` for the key ``(seed, stratum_key, item_key, replicate)``."""
    return bits_to_uniform(counter_bits(seed, stratum_key, item_key, replicate))


@numba.njit(inline="always", cache=True)
def poisson1_from_bits(bits: np.uint64) -> np.int64:
    """Poisson(1) variate by exact CDF inversion of ``bits_to_uniform(bits)``."""
    w = np.int64(0)
    for k in range(_THRESHOLDS_SHIFTED.size):
        w += np.int64(bits >= _THRESHOLDS_SHIFTED[k])
    return w


@numba.njit(inline="always", cache=True)
def poisson1_weight(u: float) -> np.int64:
    """Poisson(1) variate by inversion: ``#{k : u >= F(k)}`` for ``u`` in ``[0, 1)``.

    For ``u`` on the 2**-53 grid (as produced by ``bits_to_uniform``) this equals
    ``poisson1_from_bits``; the float thresholds are exact multiples of 2**-53.
    """
    w = np.int64(0)
    for k in range(_THRESHOLDS_FLOAT.size):
        w += np.int64(u >= _THRESHOLDS_FLOAT[k])
    return w


@numba.njit(inline="always", cache=True)
def counter_poisson1(
    seed: np.uint64, stratum_key: np.uint64, item_key: np.uint64, replicate: np.int64
) -> np.int64:
    """The Poisson(1) bootstrap weight of an item in a replicate."""
    return poisson1_from_bits(counter_bits(seed, stratum_key, item_key, replicate))


# ----------------------------------------------------------------------------- numpy references


def _u64(x: npt.ArrayLike) -> np.ndarray:
    """Any integer array-like (including Python ints up to 2**64 - 1) as a uint64 array."""
    arr = np.asarray(x)
    if arr.dtype == np.uint64:
        return arr
    if arr.dtype == object or (arr.dtype.kind == "i" and arr.size and arr.min() < 0):
        # Python ints beyond int64, or negative ints taken modulo 2**64.
        return np.array([int(v) % 2**64 for v in arr.ravel()], dtype=np.uint64).reshape(arr.shape)
    return arr.astype(np.uint64)


def mix64_reference(z: npt.ArrayLike) -> np.ndarray:
    """Numpy reference of :func:`mix64` (elementwise over a uint64 array)."""
    z = _u64(z)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> _SHIFT30)) * _MUL1
        z = (z ^ (z >> _SHIFT27)) * _MUL2
        return z ^ (z >> _SHIFT31)


def stream_key_reference(
    seed: npt.ArrayLike, stratum_key: npt.ArrayLike, item_key: npt.ArrayLike
) -> np.ndarray:
    """Numpy reference of :func:`stream_key` (broadcasting)."""
    with np.errstate(over="ignore"):
        h = mix64_reference(_u64(seed) ^ _SEED_DOMAIN)
        h = mix64_reference((h ^ _u64(stratum_key)) + _GAMMA)
        return mix64_reference((h ^ _u64(item_key)) + _GAMMA)


def replicate_key_reference(replicate: npt.ArrayLike) -> np.ndarray:
    """Numpy reference of :func:`replicate_key`."""
    with np.errstate(over="ignore"):
        return mix64_reference((_u64(replicate) + _U64(1)) * _GAMMA ^ _REPLICATE_DOMAIN)


def counter_bits_reference(
    seed: npt.ArrayLike,
    stratum_key: npt.ArrayLike,
    item_key: npt.ArrayLike,
    replicate: npt.ArrayLike,
) -> np.ndarray:
    """Numpy reference of :func:`counter_bits` (broadcasting)."""
    return mix64_reference(
        stream_key_reference(seed, stratum_key, item_key) ^ replicate_key_reference(replicate)
    )


def bits_to_uniform_reference(bits: npt.ArrayLike) -> np.ndarray:
    """Numpy reference of :func:`bits_to_uniform`."""
    return (_u64(bits) >> _SHIFT11).astype(np.float64) * _TWO_POW_MINUS_53


def counter_uniform_reference(
    seed: npt.ArrayLike,
    stratum_key: npt.ArrayLike,
    item_key: npt.ArrayLike,
    replicate: npt.ArrayLike,
) -> np.ndarray:
    """Numpy reference of :func:`counter_uniform` (broadcasting)."""
    return bits_to_uniform_reference(counter_bits_reference(seed, stratum_key, item_key, replicate))


def poisson1_from_bits_reference(bits: npt.ArrayLike) -> np.ndarray:
    """Numpy reference of :func:`poisson1_from_bits` (int64 array)."""
    top = _u64(bits) >> _SHIFT11
    return np.searchsorted(POISSON1_THRESHOLDS, top, side="right").astype(np.int64)


def poisson1_weight_reference(u: npt.ArrayLike) -> np.ndarray:
    """Numpy reference of :func:`poisson1_weight` (int64 array)."""
    return np.searchsorted(_THRESHOLDS_FLOAT, np.asarray(u, dtype=np.float64), side="right").astype(
        np.int64
    )


# ----------------------------------------------------------------------------- stable keys

#: Separator of the parts of a key text, and the escape that keeps it unambiguous.
KEY_SEP = "\x1f"
KEY_ESC = "\x1e"


def escape_key_part(part: str) -> str:
    """`part` with `KEY_ESC` and `KEY_SEP` escaped: unchanged for text without either.

    In ``escape_key_part(a) + KEY_SEP + b`` the first unescaped separator ends `a`, so two
    different pairs (a, b) never give the same text, whatever control characters they hold;
    names without those two characters keep the text (and the keys) they always had.
    """
    if KEY_ESC in part or KEY_SEP in part:
        return part.replace(KEY_ESC, KEY_ESC + KEY_ESC).replace(KEY_SEP, KEY_ESC + KEY_SEP)
    return part


def _length(values: Any) -> int:
    return len(values) if hasattr(values, "__len__") else np.asarray(values).size


def pair_keys(firsts: Any, lasts: Any, prefix: str = "") -> np.ndarray:
    """XXH64 of ``prefix + escape_key_part(first) + KEY_SEP + last`` per row, in one pass.

    The text is built and hashed by a compiled kernel over the strings' UTF-8 buffers (see
    :mod:`metrics.bootstrap.strhash`): an Arrow array's or polars Series' own buffers, or Python
    strings joined by NUL a slice at a time (a string holding a NUL goes through Arrow instead);
    values neither can hold (lone surrogates, non-strings, nulls) take a Python path that builds
    the same text.

    Args:
        firsts: First part per row (escaped), array-like of str, polars Series or Arrow array.
        lasts: Last part per row (taken as-is: the first unescaped separator ends `first`).
        prefix: Text put in front of every key, not escaped (a seed, say).

    Returns:
        A uint64 array with one key per row.
    """
    from metrics.bootstrap.strhash import (
        arrow_strings,
        check_pair_lengths,
        hash_object_pairs,
        hash_pairs,
        hash_strings,
    )

    if isinstance(firsts, (list, tuple, np.ndarray)) and isinstance(
        lasts, (list, tuple, np.ndarray)
    ):
        keys = hash_object_pairs(prefix, firsts, lasts)  # Python strings: no Arrow conversion
        if keys is not None:
            return keys
    a = arrow_strings(firsts)
    b = arrow_strings(lasts)
    if a is not None and b is not None:
        check_pair_lengths(len(a), len(b))
        # One compiled pass escapes the first part, joins and hashes each row's text (the
        # kernel's escape is escape_key_part's, byte for byte: KEY_ESC and KEY_SEP are \x1e, \x1f).
        return hash_pairs(prefix, a, b)
    texts = [
        prefix + escape_key_part(str(f)) + KEY_SEP + str(x)
        for f, x in zip(_as_strings(firsts), _as_strings(lasts), strict=True)
    ]
    return hash_strings(np.array(texts, dtype=object))


def _as_strings(values: Any) -> np.ndarray:
    # Object arrays of Python str: a numpy "U" array would drop trailing NUL characters, and
    # "a\x00" would become "a".
    if hasattr(values, "to_list"):
        values = values.to_list()
    elif hasattr(values, "to_pylist"):
        values = values.to_pylist()
    arr = np.asarray(values, dtype=object).reshape(-1)
    if not all(type(v) is str for v in arr):
        arr = np.array([str(v) for v in arr], dtype=object)
    return arr


def item_keys(tasks: Any, item_ids: Any) -> np.ndarray:
    """Stable 64-bit keys of items: XXH64 of ``escape_key_part(task) + "\\x1f" + item_id``.

    XXH64 with seed 0 of the UTF-8 text (see :mod:`metrics.bootstrap.strhash`), so a key depends
    only on the two strings: not on the process (unlike ``hash``), the row order, the library
    versions or the machine. The escape makes the pair unambiguous (see :func:`escape_key_part`).

    Args:
        tasks: Task name per row (array-like of str, polars Series or Arrow array).
        item_ids: Item id per row (same kinds), same length.

    Returns:
        A uint64 array with one key per row.

    Raises:
        UserError: If the two arrays differ in length.
    """
    from engine.errors import UserError

    n_tasks, n_ids = _length(tasks), _length(item_ids)
    if n_tasks != n_ids:
        raise UserError(
            f"item_keys: tasks has {n_tasks} entries but item_ids has {n_ids}",
            "pass one task and one item id per row",
        )
    if n_tasks == 0:
        return np.zeros(0, dtype=np.uint64)
    return pair_keys(tasks, item_ids)


def stratum_keys(strata: Any) -> np.ndarray:
    """Stable 64-bit keys of strata (tasks): XXH64 of the name, as in :func:`item_keys`.

    Args:
        strata: Stratum (task) name per item or row.

    Returns:
        A uint64 array with one key per entry.
    """
    from metrics.bootstrap.strhash import hash_strings

    if _length(strata) == 0:
        return np.zeros(0, dtype=np.uint64)
    return hash_strings(strata)
