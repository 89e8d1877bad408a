"""Backfill ranges and the replay command's refusals (no broker needed)."""

from __future__ import annotations

import pytest

from landfall.errors import LandfallError
from landfall.operations import partitions_between
from tests.unit.test_cli import _landfall


def test_a_range_of_days_or_hours_includes_both_ends() -> None:
    assert partitions_between("2026-02-27", "2026-03-02") == [
        "2026-02-27", "2026-02-28", "2026-03-01", "2026-03-02",
    ]  # fmt: skip
    assert partitions_between("2026-11-01T22", "2026-11-02T01", hourly=True) == [
        "2026-11-01T22", "2026-11-01T23", "2026-11-02T00", "2026-11-02T01",
    ]  # fmt: skip
    assert partitions_between("2026-11-01", "2026-11-01") == ["2026-11-01"]


@pytest.mark.parametrize(
    ("first", "last", "hourly", "message"),
    [
        ("2026-11-05", "2026-11-01", False, "ends .2026-11-01. before it starts"),
        ("2026-11-01", "11/05/2026", False, "partitions like YYYY-MM-DD"),
        ("2026-11-01", "2026-11-02", True, "partitions like YYYY-MM-DDTHH"),
        ("2020-01-01", "2026-01-01", False, "2193 partitions; at most 2000"),
    ],
)
def test_a_bad_range_is_refused_clearly(first: str, last: str, hourly: bool, message: str) -> None:
    with pytest.raises(LandfallError, match=message):
        partitions_between(first, last, hourly=hourly)


def test_replay_needs_a_known_service_and_one_place_to_go_back_to() -> None:
    broker = {"LANDFALL_KAFKA_BOOTSTRAP": "127.0.0.1:1"}
    unknown = _landfall("replay", "scorer", "--from-beginning", **broker)
    assert unknown.returncode == 2 and "unknown service 'scorer'" in unknown.stderr
    nowhere = _landfall("replay", "validator", **broker)
    assert nowhere.returncode == 2 and "--from-beginning, --offset or --since" in nowhere.stderr
    both = _landfall("replay", "validator", "--from-beginning", "--offset", "3", **broker)
    assert both.returncode == 2 and "--from-beginning, --offset or --since" in both.stderr


def test_backfill_of_an_unknown_dataset_names_the_known_ones() -> None:
    result = _landfall("backfill", "nope", "2026-11-01", "2026-11-02", "--dry-run")
    assert result.returncode == 2
    assert "unknown dataset 'nope'" in result.stderr and "demo" in result.stderr
