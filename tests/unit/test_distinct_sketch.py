"""The validator's distinct-count sketches: numbers hashed with numpy, as DataSketches does."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
from datasketches import hll_sketch, hll_union, tgt_hll_type

from services.validator.distinct_sketch import (
    SKETCH_LG_K,
    DistinctSketch,
    hll8_image,
    hll_registers,
)


def _merged_estimate(*images: bytes) -> float:
    """What the driver does with the tasks' sketches (arrow_engine._merged)."""
    union = hll_union(SKETCH_LG_K)
    for image in images:
        union.update(hll_sketch.deserialize(image))
    return float(union.get_result().get_estimate())


@pytest.mark.parametrize("distinct", [1, 10, 100, 1_000, 10_000, 100_000, 1_000_000])
def test_numbers_split_over_tasks_are_counted_within_the_sketch_error(distinct: int) -> None:
    values = np.random.default_rng(distinct).normal(size=distinct)
    tasks = [DistinctSketch("double") for _ in range(3)]
    for sketch, share in zip(tasks, np.array_split(values, 3), strict=True):
        for batch in np.array_split(share, 4):  # several batches a task
            sketch.update(pa.array(batch))
    estimate = _merged_estimate(*(t.serialize() for t in tasks))
    # 2^12 registers: a standard error of 1.6%; 5% is Spark's approx_count_distinct's.
    assert estimate == pytest.approx(distinct, rel=0.05)


@pytest.mark.parametrize(
    ("values", "kind"),
    [
        (np.random.default_rng(1).integers(-(2**62), 2**62, 100_000), pa.int64()),
        (np.random.default_rng(2).integers(-50_000, 50_000, 100_000), pa.int32()),
        (np.random.default_rng(3).normal(size=100_000), pa.float64()),
        (np.random.default_rng(4).normal(size=100_000), pa.float32()),
        (np.array([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 5e-324, 1e308] * 9), pa.float64()),
    ],
)
def test_numbers_set_the_registers_datasketches_own_updates_set(
    values: np.ndarray, kind: pa.DataType
) -> None:
    column = pa.array(values, kind)
    library = hll_sketch(SKETCH_LG_K, tgt_hll_type.HLL_8)
    for value in column.to_pylist():
        library.update(value)
    slots, ranks = hll_registers(column)
    registers = np.zeros(1 << SKETCH_LG_K, np.uint8)
    np.maximum.at(registers, slots, ranks)
    ours, theirs = hll8_image(registers), bytes(library.serialize_compact())
    # The library's values add nothing to our registers: each hashed to a register we
    # already hold at that value or above.
    assert _merged_estimate(ours, theirs) == _merged_estimate(ours)
    if theirs[7] & 3 == 2:  # the library in HLL mode: the very same registers
        assert np.array_equal(registers, np.frombuffer(theirs, np.uint8, offset=40))
    else:  # few values, which the library counts exactly: and no more hashes of ours
        assert round(_merged_estimate(ours)) == round(library.get_estimate())


def test_small_counts_are_exact_as_the_library_keeps_them() -> None:
    # 14 values fall into 4096 registers; two in one register would read as 13 from the
    # registers alone. A task with few values hands over the library's exact sketch.
    values = [5.0, 150.0, -1.0, 10.0, 10.0, 20.0, 30.0, 1.0, 100.0, 0.0, 50.0, 60.0, 70.0]
    values += [80.0, 90.0]
    for seed in range(20):
        order = np.random.default_rng(seed).permutation(values)
        halves = [DistinctSketch("double"), DistinctSketch("double")]
        for sketch, half in zip(halves, np.array_split(order, 2), strict=True):
            sketch.update(pa.array(half))
        assert round(_merged_estimate(*(h.serialize() for h in halves))) == 14


def test_a_value_seen_again_or_written_otherwise_counts_once() -> None:
    floats = DistinctSketch("double")
    floats.update(pa.array([0.0, -0.0, float("nan"), float("nan"), 1.5, 1.5]))
    assert round(_merged_estimate(floats.serialize())) == 3  # 0, NaN, 1.5
    ints = DistinctSketch("bigint")
    ints.update(pa.array(np.random.default_rng(0).integers(0, 3_000, 200_000)))
    assert _merged_estimate(ints.serialize()) == pytest.approx(3_000, rel=0.05)
    # An int and a float of the same number are one value, as Spark counts a column.
    small = DistinctSketch("float")
    small.update(pa.array([1.0, 2.0], pa.float32()))
    small.update(pa.array([1.0, 2.0, 3.0], pa.float32()))
    assert round(_merged_estimate(small.serialize())) == 3


def test_the_image_is_the_one_datasketches_writes_for_the_same_registers() -> None:
    # A sketch DataSketches filled itself, in HLL mode, and its registers rebuilt into
    # an image by hll8_image: byte for byte the same, but for what marks a sketch merged
    # from others (out of order, so its estimate does not use the in-order HIP sum).
    library = hll_sketch(SKETCH_LG_K, tgt_hll_type.HLL_8)
    for value in range(50_000):
        library.update(value)
    image = bytearray(library.serialize_compact())
    registers = np.frombuffer(bytes(image), dtype=np.uint8, offset=40).copy()
    assert len(registers) == 1 << SKETCH_LG_K
    ours = hll8_image(registers)
    image[5] |= 16  # the out-of-order flag
    image[8:16] = bytes(8)  # the HIP sum, which only an in-order sketch keeps
    assert ours == bytes(image)
    assert _merged_estimate(ours) == pytest.approx(library.get_estimate(), rel=0.03)


def test_an_empty_column_is_an_empty_sketch() -> None:
    sketch = DistinctSketch("int")
    sketch.update(pa.array([], pa.int32()))
    image = sketch.serialize()
    assert hll_sketch.deserialize(image).is_empty()
    assert _merged_estimate(image) == 0


def test_strings_dates_and_flags_go_through_datasketches_own_updates() -> None:
    strings = DistinctSketch("string")
    strings.update(pa.array(["a", "b", "a"]))
    dates = DistinctSketch("date")
    dates.update(pa.array([dt.date(2026, 1, 1), dt.date(2026, 1, 2), dt.date(2026, 1, 1)]))
    flags = DistinctSketch("boolean")
    flags.update(pa.array([True, False, True]))
    for sketch in (strings, dates, flags):
        assert round(_merged_estimate(sketch.serialize())) == 2
