"""Lake paths, the escape check and the commit protocol (pointers, fencing, history)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from pyarrow import fs as pafs

from landfall.errors import PathOutsideLakeError
from landfall.ingress import complete_landed_event
from landfall.lake import (
    MANIFEST_NAME,
    Lake,
    PartitionOutput,
    StaleCommitError,
    Zone,
    read_manifest,
)
from landfall.run_ids import fencing_token, new_run_id, run_started_ms


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


def test_paths_of_an_object_store_lake_keep_their_uri() -> None:
    # The bug this guards against: s3a://bucket/lake became a local folder named "s3a:".
    lake = Lake("s3a://bucket/lake", fs=pafs.LocalFileSystem(), fs_root="/nowhere")
    assert str(lake.partition_root("demo", "validated", "2026-11-01")) == (
        "s3a://bucket/lake/demo/validated/2026-11-01"
    )
    assert lake.relative("s3a://bucket/lake/demo/raw/x") == "demo/raw/x"
    assert not lake.is_local


def _attempt(lake: Lake, run_id: str, text: str, partition: str = "2026-11-01") -> PartitionOutput:
    output = lake.stage_output("demo", "validated", partition, run_id)
    output.staging.mkdir(parents=True)
    (output.staging / "a.parquet").write_text(text)
    return output


def test_a_newer_run_becomes_the_committed_output_and_the_older_stays_in_history(
    tmp_path: Path,
) -> None:
    lake = Lake(tmp_path)
    older, newer = new_run_id(1_000), new_run_id(2_000)
    first = lake.commit_partition(_attempt(lake, older, "old"), {"run_id": older})
    second = lake.commit_partition(_attempt(lake, newer, "new"), {"run_id": newer})

    assert lake.partition_dir("demo", "validated", "2026-11-01") == second
    assert (
        lake.partition_dir("demo", "validated", "2026-11-01") / "a.parquet"
    ).read_text() == "new"
    assert read_manifest(second)["run_id"] == newer
    assert [c.run_id for c in lake.commits("demo", "validated", "2026-11-01")] == [older, newer]
    assert (first / "a.parquet").read_text() == "old"  # kept until gc
    assert lake.output_of_run("demo", "validated", "2026-11-01", older) == first


def test_a_stale_writer_cannot_replace_a_newer_commit(tmp_path: Path) -> None:
    # A zombie (or a replay racing a backfill) finishing last with an older run.
    lake = Lake(tmp_path)
    older, newer = new_run_id(1_000), new_run_id(2_000)
    late = _attempt(lake, older, "stale")
    committed = lake.commit_partition(_attempt(lake, newer, "new"), {"run_id": newer})
    with pytest.raises(StaleCommitError, match=f"run {newer} started later"):
        lake.commit_partition(late, {"run_id": older})
    assert lake.partition_dir("demo", "validated", "2026-11-01") == committed
    assert not late.staging.exists()
    # A report of the older run still joins the history, never as the current one.
    report = lake.stage_output("demo", "reports", "2026-11-01", older)
    report.staging.mkdir(parents=True)
    (report.staging / "report.json").write_text("{}")
    lake.commit_partition(report, {}, fenced=False)
    assert lake.committed("demo", "reports", "2026-11-01").run_id == older  # type: ignore[union-attr]


def test_the_same_run_committed_twice_keeps_the_first_output(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    run = new_run_id()
    first = lake.commit_partition(_attempt(lake, run, "first"), {"run_id": run})
    again = _attempt(lake, run, "second")
    assert lake.commit_partition(again, {"run_id": run}) == first
    assert again.target == first and not again.staging.exists()


def test_a_crash_before_the_pointer_leaves_the_previous_commit(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    older, newer = new_run_id(1_000), new_run_id(2_000)
    committed = lake.commit_partition(_attempt(lake, older, "old"), {"run_id": older})
    crashed = _attempt(lake, newer, "half")
    (crashed.staging / MANIFEST_NAME).write_text("{}")  # written, then the process died
    assert lake.partition_dir("demo", "validated", "2026-11-01") == committed


def test_a_failed_run_is_history_not_the_committed_output(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    good, bad = new_run_id(1_000), new_run_id(2_000)
    success = lake.commit_partition(_attempt(lake, good, "ok"), {})
    lake.commit_partition(_attempt(lake, bad, "failed"), {}, succeeded=False)
    assert lake.partition_dir("demo", "validated", "2026-11-01") == success
    history = lake.commits("demo", "validated", "2026-11-01")
    assert [(c.run_id, c.succeeded) for c in history] == [(good, True), (bad, False)]


def test_an_output_of_an_earlier_release_reads_as_committed(tmp_path: Path) -> None:
    folder = tmp_path / "demo" / "validated" / "2026-11-01"
    folder.mkdir(parents=True)
    (folder / MANIFEST_NAME).write_text(json.dumps({"run_id": str(uuid.uuid4())}))
    lake = Lake(tmp_path)
    assert lake.partition_dir("demo", "validated", "2026-11-01") == folder
    # Any time-ordered run is newer than it.
    run = new_run_id()
    assert lake.commit_partition(_attempt(lake, run, "new"), {}) == lake.partition_dir(
        "demo", "validated", "2026-11-01"
    )


def test_a_restarted_writer_removes_only_what_its_dead_processes_left(tmp_path: Path) -> None:
    crash = (
        "import os, sys; from landfall.lake import Lake;"
        "o = Lake(sys.argv[1]).stage_output('demo', 'features', '2026-11-01', 'r', writer='w');"
        "o.staging.mkdir(parents=True); (o.staging / 'part-0.parquet').write_text('x');"
        "print(o.staging.rel); os._exit(9)"
    )
    left = subprocess.run(
        [sys.executable, "-c", crash, str(tmp_path)], capture_output=True, text=True
    ).stdout.strip()
    lake = Lake(tmp_path)
    live = lake.stage_output("demo", "features", "2026-11-01", "r2", writer="w")
    live.staging.mkdir(parents=True)  # this process is alive: a sibling replica's work
    other = lake.stage_output("demo", "features", "2026-11-01", "r3", writer="another")
    other.staging.mkdir(parents=True)

    assert lake.path(left).exists()
    assert lake.remove_abandoned("w") == [left]
    assert not lake.path(left).exists()
    assert live.staging.exists() and other.staging.exists()


def test_run_ids_sort_by_their_start_and_derive_deterministically() -> None:
    assert fencing_token(new_run_id(5)) < fencing_token(new_run_id(6)) < fencing_token(new_run_id())
    assert new_run_id(7, "topic/0@12") == new_run_id(7, "topic/0@12")
    assert new_run_id(7, "topic/0@12") != new_run_id(7, "topic/0@13")
    assert run_started_ms(new_run_id(123_456)) == 123_456
    assert run_started_ms(str(uuid.uuid4())) == 0  # ids of earlier releases: oldest
    assert "/" not in fencing_token("../../etc")  # a run id an upstream chose is hashed


# --------------------------------------------------------------------------- confinement

PARTITION = "2026-11-01"


def _landed(lake: Lake, relative: str = f"demo/raw/{PARTITION}") -> Path:
    """A landed raw partition with one data file, at ``relative`` under the lake."""
    folder = Path(lake.uri) / relative
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
        assert str(Path(lake.uri)) not in message
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
    assert path == Path(lake.uri) / "demo" / "raw" / PARTITION and not path.exists()


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


def test_stage_inputs_are_confined_to_their_zone_and_never_to_bookkeeping(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    committed = _landed(lake, f"demo/validated/{PARTITION}")
    _landed(lake, f"demo/validated/_staging/{PARTITION}.run-1.0000")
    _landed(lake, f"demo/validated/{PARTITION}/_commits")
    found = lake.input_dir(
        f"demo/validated/{PARTITION}", dataset="demo", zone="validated", partition=PARTITION
    )
    assert found == committed
    assert "bookkeeping" in _refused(lake, f"demo/validated/_staging/{PARTITION}.run-1.0000",
                                     zone="validated")  # fmt: skip
    assert "bookkeeping" in _refused(lake, f"demo/validated/{PARTITION}/_commits",
                                     zone="validated")  # fmt: skip
    assert "inside demo/features/" in _refused(lake, f"demo/validated/{PARTITION}", "features")


def test_a_symlinked_partition_folder_is_refused(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    outside = tmp_path / "outside" / "secrets"
    outside.mkdir(parents=True)
    (outside / "passwords.csv").write_text("id\n1\n")
    (Path(lake.uri) / "demo" / "raw").mkdir(parents=True)
    (Path(lake.uri) / "demo" / "raw" / PARTITION).symlink_to(outside)

    for named in (None, f"demo/raw/{PARTITION}", f"demo/raw/{PARTITION}/"):
        message = _refused(lake, named)
        assert f"'demo/raw/{PARTITION}' is refused: it is a symbolic link" in message
        assert str(outside) not in message  # where the link leads is not said


def test_a_symlink_on_the_way_to_the_partition_is_refused(tmp_path: Path) -> None:
    lake = Lake(tmp_path / "lake")
    real = Lake(tmp_path / "elsewhere")
    _landed(real)
    Path(lake.uri).mkdir(parents=True)
    (Path(lake.uri) / "demo").symlink_to(Path(real.uri) / "demo")  # the whole dataset folder
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
    (Path(lake.uri) / "demo" / "raw").mkdir()
    (Path(lake.uri) / "demo" / "raw" / PARTITION).symlink_to(validated)
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


def test_a_replay_of_a_run_replaces_its_output_but_never_a_newer_runs(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    run, newer = new_run_id(1_000), new_run_id(5_000)
    lake.commit_partition(_attempt(lake, run, "first"), {"run_id": run})
    replayed = lake.stage_output("demo", "validated", "2026-11-01", run, supersede=True)
    replayed.staging.mkdir(parents=True)
    (replayed.staging / "a.parquet").write_text("replayed")
    committed = lake.commit_partition(replayed, {"run_id": run})
    assert committed == replayed.target  # not the first output, as a redelivery would get
    assert (lake.partition_dir("demo", "validated", "2026-11-01") / "a.parquet").read_text() == (
        "replayed"
    )
    lake.commit_partition(_attempt(lake, newer, "newer"), {"run_id": newer})
    late = lake.stage_output("demo", "validated", "2026-11-01", run, supersede=True)
    late.staging.mkdir(parents=True)
    (late.staging / "a.parquet").write_text("late replay")
    with pytest.raises(StaleCommitError):
        lake.commit_partition(late, {"run_id": run})


def test_a_run_without_a_start_is_ordered_by_its_commit_not_fenced_out(tmp_path: Path) -> None:
    # An upstream event that named itself but not its time: its run id has no start.
    lake = Lake(tmp_path)
    timed = new_run_id()
    lake.commit_partition(_attempt(lake, timed, "timed"), {"run_id": timed})
    untimed = complete_landed_event(
        {"dataset": "demo", "partition": "2026-11-01", "event_id": "upstream-42"},
        origin="landed/0@9",
        logged_ms=123,
    )["run_id"]
    assert run_started_ms(untimed) == 0
    time.sleep(0.002)  # committed later than the timed run
    lake.commit_partition(_attempt(lake, untimed, "untimed"), {"run_id": untimed})
    assert lake.committed("demo", "validated", "2026-11-01").run_id == untimed  # type: ignore[union-attr]
    assert fencing_token(untimed) < fencing_token(timed)  # legacy reads still sort it oldest
