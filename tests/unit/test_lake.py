"""Lake paths, the escape check and atomic partition commits."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from landfall.errors import PathOutsideLakeError
from landfall.lake import MANIFEST_NAME, Lake, Zone, read_manifest


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


# --------------------------------------------------------------------------- confinement

PARTITION = "2026-11-01"


def _landed(lake: Lake, relative: str = f"demo/raw/{PARTITION}") -> Path:
    """A landed raw partition with one data file, at ``relative`` under the lake."""
    folder = lake.root / relative
    folder.mkdir(parents=True)
    (folder / "part-0.csv").write_text("id\n1\n")
    return folder


def _refused(lake: Lake, named: str | None, zone: Zone = "raw") -> str:
    """The message of the refusal ``input_dir`` must raise for ``named``."""
    with pytest.raises(PathOutsideLakeError) as caught:
        lake.input_dir(named, dataset="demo", zone=zone, partition=PARTITION)
    message = str(caught.value)
    # Errors travel into events and reports: no server path the event did not name
    # itself, and no retry (the same event names the same path again).
    assert caught.value.retryable is False
    if not (named or "").startswith("/"):
        assert str(lake.root) not in message
    return message


def test_the_default_raw_path_and_a_path_inside_the_raw_zone_are_read(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    landed = _landed(lake)
    assert lake.input_dir(None, dataset="demo", zone="raw", partition=PARTITION) == landed
    elsewhere = _landed(lake, "demo/raw/upstream/batch-7")
    named = "demo/raw/upstream/batch-7/"
    assert lake.input_dir(named, dataset="demo", zone="raw", partition=PARTITION) == elsewhere


def test_a_partition_not_landed_yet_is_left_to_the_reader(tmp_path: Path) -> None:
    # Not an error here: the validator says "not found" and that a retry may help.
    lake = Lake(tmp_path)
    path = lake.input_dir(None, dataset="demo", zone="raw", partition=PARTITION)
    assert path == lake.root / "demo" / "raw" / PARTITION and not path.exists()


@pytest.mark.parametrize(
    ("named", "rule"),
    [
        (".", "must be a folder inside demo/raw/"),  # the whole lake
        ("demo", "must be a folder inside demo/raw/"),
        ("demo/raw", "must be a folder inside demo/raw/"),  # every partition at once
        ("demo/raw/.", "must be a folder inside demo/raw/"),
        (f"demo/validated/{PARTITION}", "must be a folder inside demo/raw/"),  # another zone
        (f"other/raw/{PARTITION}", "must be a folder inside demo/raw/"),  # another dataset
        (f"demo/raw/../../other/raw/{PARTITION}", "must be a folder inside demo/raw/"),
        ("..", "outside the lake root"),
        ("../../../etc", "outside the lake root"),
        (f"demo/raw/../../../{PARTITION}", "outside the lake root"),
        ("/etc/passwd", "never absolute"),
        ("", "not a lake-relative path"),
        ("demo/raw/a\x00b", "NUL"),
    ],
)
def test_a_raw_input_outside_its_zone_is_refused(tmp_path: Path, named: str, rule: str) -> None:
    lake = Lake(tmp_path / "lake")
    _landed(lake)
    _landed(lake, f"demo/validated/{PARTITION}")
    _landed(lake, f"other/raw/{PARTITION}")
    message = _refused(lake, named)
    assert rule in message and "raw input" in message


def test_an_absolute_path_is_refused_even_inside_the_zone(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    landed = _landed(lake)
    assert "never absolute" in _refused(lake, str(landed))


def test_stage_inputs_are_confined_to_their_zone_and_never_to_staging(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    committed = _landed(lake, f"demo/validated/{PARTITION}")
    _landed(lake, f"demo/validated/_staging/{PARTITION}.run-1.0000")
    found = lake.input_dir(
        f"demo/validated/{PARTITION}", dataset="demo", zone="validated", partition=PARTITION
    )
    assert found == committed
    assert "being written" in _refused(lake, f"demo/validated/_staging/{PARTITION}.run-1.0000",
                                        zone="validated")  # fmt: skip
    assert "inside demo/features/" in _refused(lake, f"demo/validated/{PARTITION}", "features")


def test_a_symlinked_partition_folder_is_refused(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    outside = tmp_path / "outside" / "secrets"
    outside.mkdir(parents=True)
    (outside / "passwords.csv").write_text("id\n1\n")
    (lake.root / "demo" / "raw").mkdir(parents=True)
    (lake.root / "demo" / "raw" / PARTITION).symlink_to(outside)

    for named in (None, f"demo/raw/{PARTITION}", f"demo/raw/{PARTITION}/"):
        message = _refused(lake, named)
        assert f"'demo/raw/{PARTITION}' is refused: it is a symbolic link" in message
        assert str(outside) not in message  # where the link leads is not said


def test_a_symlink_on_the_way_to_the_partition_is_refused(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    real = Lake(tmp_path / "elsewhere")
    _landed(real)
    lake.root.mkdir(parents=True)
    (lake.root / "demo").symlink_to(real.root / "demo")  # the whole dataset folder
    assert "'demo' is a symbolic link" in _refused(lake, None)


def test_a_symlinked_file_or_folder_inside_the_partition_is_refused(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    landed = _landed(lake)
    secret = tmp_path / "secret.csv"
    secret.write_text("id\n1\n")
    (landed / "nested" / "deeper").mkdir(parents=True)
    (landed / "nested" / "deeper" / "part-1.csv").symlink_to(secret)
    assert f"'demo/raw/{PARTITION}/nested/deeper/part-1.csv' is a symbolic link" in _refused(
        lake, None
    )
    (landed / "nested" / "deeper" / "part-1.csv").unlink()
    (landed / "linked").symlink_to(tmp_path)
    assert f"'demo/raw/{PARTITION}/linked' is a symbolic link" in _refused(lake, None)


def test_a_symlink_is_refused_even_when_it_stays_inside_the_lake(tmp_path: Path) -> None:
    # The rule is "no link", not "no link out": what a link points to can change later.
    lake = Lake(tmp_path)
    validated = _landed(lake, f"demo/validated/{PARTITION}")
    (lake.root / "demo" / "raw").mkdir()
    (lake.root / "demo" / "raw" / PARTITION).symlink_to(validated)
    assert "symbolic link" in _refused(lake, None)


def test_a_huge_path_is_refused_at_once_with_a_short_message(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    huge = "demo/raw/" + "a/" * 5_000_000  # 10 MB
    started = time.monotonic()
    message = _refused(lake, huge)
    with pytest.raises(PathOutsideLakeError) as caught:
        lake.resolve(huge)
    assert time.monotonic() - started < 1.0
    assert "longer than 1024 characters" in message
    assert len(message) < 400 and len(str(caught.value)) < 400


def test_an_escape_message_names_no_server_path(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    with pytest.raises(PathOutsideLakeError) as caught:
        lake.resolve("../elsewhere")
    assert "'../elsewhere' is outside the lake root" in str(caught.value)
    assert str(tmp_path) not in str(caught.value)


def test_a_nul_character_is_a_refusal_not_a_raw_error(tmp_path: Path) -> None:
    # The OS refuses it with ValueError, which the API answered with a 500.
    with pytest.raises(PathOutsideLakeError, match="NUL"):
        Lake(tmp_path).resolve("demo/\x00")
