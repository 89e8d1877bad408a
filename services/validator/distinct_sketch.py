"""A column's distinct-count sketch, fed a record batch at a time.

The validator's profile counts each column's distinct values with HyperLogLog sketches
(Apache DataSketches) that the driver merges across tasks (``hll_union``). Its Python
binding takes one value per call, which was about 40% of a validation task on a table of
measurements. Numbers are therefore hashed as DataSketches hashes them (MurmurHash3,
x64 128-bit, on the value's 8 bytes, seed 9001) with numpy, a batch at a time, into the
registers of its HLL_8 layout: the same registers its own updates would set. A column
with few distinct values in a task is handed to the library value by value instead (its
exact list of hashes, as the library keeps a small sketch), so small counts stay exact.
Either way the driver gets a serialized DataSketches sketch, and the union and its
estimator stay the library's. Strings and dates (and flags) keep the library's own
per-value updates.
"""

from __future__ import annotations

import struct
from collections import deque

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from datasketches import hll_sketch

__all__ = ["SKETCH_LG_K", "DistinctSketch", "hll8_image", "hll_registers"]

# Accuracy of the sketches: 2^12 registers, about 1.6% standard error (Spark's
# approx_count_distinct allows 5%).
SKETCH_LG_K = 12

_NUMBERS = ("tinyint", "smallint", "int", "bigint", "float", "double")
# DataSketches' serialized HLL sketch (hll/include/HllUtil.hpp): ten preamble ints, then
# one byte a register for HLL_8.
_PREAMBLE = struct.Struct("<BBBBBBBBdddii")
_PREAMBLE_INTS, _SERIAL_VERSION, _HLL_FAMILY = 10, 1, 7
_COMPACT, _OUT_OF_ORDER = 8, 16  # flags; out of order: estimate without HIP, as a union's
_HLL_MODE, _HLL_8 = 2, 2
# Until this many registers are set, a task also keeps the column's distinct values
# (a few thousand at most), to hand the library an exact small sketch.
_EXACT_UP_TO = 1024

_U64 = np.uint64
_SEED = _U64(9001)  # DataSketches' default seed
_C1, _C2 = _U64(0x87C37B91114253D5), _U64(0x4CF5AD432745937F)
_NAN_BITS = 0x7FF8000000000000  # Java's Double.doubleToLongBits(NaN), as the library uses


def _fmix(k: np.ndarray) -> np.ndarray:
    """MurmurHash3's finaliser, in place (numpy's temporaries were half its time)."""
    k ^= k >> _U64(33)
    k *= _U64(0xFF51AFD7ED558CCD)
    k ^= k >> _U64(33)
    k *= _U64(0xC4CEB9FE1A85EC53)
    k ^= k >> _U64(33)
    return k


def _murmur3_8_bytes(bits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """MurmurHash3_x64_128 of each 8-byte key (uint64, little-endian), seed 9001."""
    k1 = bits * _C1
    k1 = (k1 << _U64(31)) | (k1 >> _U64(33))
    k1 *= _C2
    # The key is all tail: h1 takes it, then both halves the length.
    h1 = k1
    h1 ^= _SEED ^ _U64(8)
    h2 = np.full(bits.shape, _SEED ^ _U64(8))
    h1 += h2
    h2 += h1
    _fmix(h1)
    _fmix(h2)
    h1 += h2
    h2 += h1
    return h1, h2


def _leading_zeros(words: np.ndarray) -> np.ndarray:
    """Leading zeros of each uint64 (64 for zero), exactly.

    frexp gives a float64's bit length, exact up to 53 bits: the top 53 bits decide,
    unless they are all zero (about one hash in 2^53), when the low 11 bits do.
    """
    top = np.frexp((words >> _U64(11)).astype(np.float64))[1]
    zeros = 53 - top
    empty = np.flatnonzero(top == 0)
    if len(empty):
        low = np.frexp((words[empty] & _U64(0x7FF)).astype(np.float64))[1]
        zeros[empty] = 64 - low
    return zeros


def _as_bits(values: pa.Array) -> np.ndarray:
    """Numbers (no nulls) as the 8 bytes the library hashes: int64 or canonical double."""
    if pa.types.is_floating(values.type):
        doubles = values.cast(pa.float64()).to_numpy() + 0.0  # -0.0 becomes 0.0
        bits = doubles.view(_U64).copy()
        bits[np.isnan(doubles)] = _NAN_BITS
        return bits
    return values.cast(pa.int64()).to_numpy().view(_U64)


def hll_registers(values: pa.Array, lg_k: int = SKETCH_LG_K) -> tuple[np.ndarray, np.ndarray]:
    """Each number's HLL register and value, as DataSketches' ``update`` computes them."""
    h1, h2 = _murmur3_8_bytes(_as_bits(values))
    slots = (h1 & _U64((1 << lg_k) - 1)).astype(np.intp)
    ranks = (np.minimum(_leading_zeros(h2), 62) + 1).astype(np.uint8)
    return slots, ranks


def hll8_image(registers: np.ndarray, lg_k: int = SKETCH_LG_K) -> bytes:
    """The registers as DataSketches serializes an HLL_8 sketch in HLL mode."""
    weights = np.ldexp(1.0, -registers.astype(np.int32))
    small = registers < 32  # the library keeps the sum in two parts, for precision
    preamble = _PREAMBLE.pack(
        _PREAMBLE_INTS,
        _SERIAL_VERSION,
        _HLL_FAMILY,
        lg_k,
        0,  # lgArr: a list or set mode's, none here
        _COMPACT | _OUT_OF_ORDER,
        0,  # curMin: HLL_8 keeps it at 0
        (_HLL_8 << 2) | _HLL_MODE,
        0.0,  # the HIP estimate, unused out of order
        float(weights[small].sum()),
        float(weights[~small].sum()),
        int(np.count_nonzero(registers == 0)),  # registers at curMin
        0,  # no auxiliary exceptions in HLL_8
    )
    return preamble + registers.astype(np.uint8).tobytes()


class DistinctSketch:
    """The distinct-count sketch of one column of a task (``declared``: its Spark type)."""

    def __init__(self, declared: str, lg_k: int = SKETCH_LG_K) -> None:
        self.declared = declared
        self.lg_k = lg_k
        self._registers: np.ndarray | None = None
        self._few: pa.Array | None = None  # the distinct numbers, while there are few
        self._sketch: hll_sketch | None = None
        if declared in _NUMBERS:
            self._registers = np.zeros(1 << lg_k, np.uint8)
            self._few = pa.array(
                [], pa.float64() if declared in ("float", "double") else pa.int64()
            )
        else:
            self._sketch = hll_sketch(lg_k)

    def update(self, values: pa.Array) -> None:
        """Add a batch's values (no nulls); a value seen before changes nothing."""
        if len(values) == 0:
            return
        if self._registers is not None:
            self._update_numbers(values)
            return
        assert self._sketch is not None
        # Strings, dates and flags repeat: dropping repeats first is cheaper than the
        # library's per-value calls (``map`` keeps each one a bare C call).
        distinct = pc.unique(values)
        if self.declared == "date":
            distinct = distinct.cast(pa.string())
        elif self.declared == "boolean":
            distinct = distinct.cast(pa.int8())
        deque(map(self._sketch.update, distinct.to_numpy(zero_copy_only=False).tolist()), maxlen=0)

    def _update_numbers(self, values: pa.Array) -> None:
        assert self._registers is not None
        slots, ranks = hll_registers(values, self.lg_k)
        np.maximum.at(self._registers, slots, ranks)
        if self._few is None:
            return
        if np.count_nonzero(self._registers) > _EXACT_UP_TO:
            self._few = None  # many values: the registers alone
            return
        typed = values.cast(self._few.type)
        self._few = pc.unique(pa.concat_arrays([self._few, typed]))

    def serialize(self) -> bytes:
        """The sketch as DataSketches serializes it (``hll_sketch.deserialize`` reads it)."""
        if self._few is not None:
            # Few values: the library's own small sketch, exact (the same hashes).
            exact = hll_sketch(self.lg_k)
            values = self._few.to_numpy(zero_copy_only=False).tolist()
            deque(map(exact.update, values), maxlen=0)
            return bytes(exact.serialize_compact())
        if self._registers is not None:
            return hll8_image(self._registers, self.lg_k)
        assert self._sketch is not None
        return bytes(self._sketch.serialize_compact())
