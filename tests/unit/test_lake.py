"""Lake paths, the escape check and atomic partition commits."""

from __future__ import annotations

from pathlib import Path

import pytest

from landfall.errors import PathOutsideLakeError
from landfall.lake import MANIFEST_NAME, Lake, read_manifest


def test_paths_inside_the_root_resolve(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    assert lake.resolve("demo/raw/2026-11-01") == tmp_path.resolve() / "demo/raw/2026-11-01"
    assert lake.resolve(str(tmp_path / "demo")) == tmp_path.resolve() / "demo"


@pytest.mark.parametrize("bad", ["../elsewhere", "demo/../../etc", "/etc/passwd"])
def test_paths_escaping_the_root_are_rejected(tmp_path: Path, bad: str) -> None:
    with pytest.raises(PathOutsideLakeError, match="outside the lake root"):
        Lake(tmp_path / "lake").resolve(bad)


def test_a_symlink_out_of_the_lake_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "lake").mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "lake" / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(PathOutsideLakeError):
        Lake(tmp_path / "lake").resolve("link")


def test_commit_replaces_the_previous_output_and_leaves_no_staging(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    first = lake.stage_output("demo", "validated", "2026-11-01", "run-1")
    first.staging.mkdir(parents=True)
    (first.staging / "a.parquet").write_text("old")
    (first.staging / "only-in-first").write_text("x")
    target = lake.commit_partition(first, {"run_id": "run-1"})

    second = lake.stage_output("demo", "validated", "2026-11-01", "run-2")
    second.staging.mkdir(parents=True)
    (second.staging / "a.parquet").write_text("new")
    lake.commit_partition(second, {"run_id": "run-2"})

    assert sorted(p.name for p in target.iterdir()) == [MANIFEST_NAME, "a.parquet"]
    assert (target / "a.parquet").read_text() == "new"
    assert read_manifest(target)["run_id"] == "run-2"
    assert list((target.parent / "_staging").iterdir()) == []


def test_discard_removes_a_staged_output(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    output = lake.stage_output("demo", "features", "2026-11-01", "run-1")
    output.staging.mkdir(parents=True)
    lake.discard(output)
    assert not output.staging.exists() and not output.target.exists()
