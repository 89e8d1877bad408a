"""The commit protocol: attempt folders, commit pointers, and what a crash leaves.

**Commits.** Object stores cannot rename a folder, so nothing is renamed. A stage
writes its output into a fresh attempt folder of its own, puts ``_manifest.json`` in
it, and commits by writing one small pointer object last (a single PUT, atomic on
every store): ``_commits/<token>.json``. The partition's committed output is the
attempt named by the greatest token. A crash at any point leaves the previous commit
or the new one, never neither. The token begins with the run's start (run ids are
time-ordered, :mod:`landfall.run_ids`): an output of an older run never becomes the
committed one over a newer run's, even when its writer (a zombie after a rebalance, a
replay racing a backfill) finishes last; such a writer is refused before it writes
its pointer. Pointers are never overwritten, so every run keeps its history until
``landfall gc`` removes what is older than the retention.

Partitions written by earlier releases (output files directly in the partition
folder, no ``_commits/``) are still read as committed.

"""

from __future__ import annotations

import json
import os
import re
import socket
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from landfall.errors import StageFailedError
from landfall.lake_paths import (
    COMMITS_DIR,
    FAILED_SUFFIX,
    INFLIGHT_DIR,
    MANIFEST_NAME,
    RUNS_DIR,
    LakePath,
    Zone,
    json_bytes,
)
from landfall.processes import pid_alive, started_at
from landfall.run_ids import fencing_token, run_started_ms

__all__ = ["Commit", "PartitionCommits", "PartitionOutput", "StaleCommitError", "writer_alive"]


class StaleCommitError(StageFailedError):
    """A newer run of the partition committed first: this older run's output is refused."""


@dataclass
class PartitionOutput:
    """One attempt's output folder: written there, and committed where it is.

    ``staging`` and ``target`` are the same folder (nothing is moved on commit); both
    names are kept for what they mean to the code that writes and the code that
    announces. ``token`` orders the attempt's run among the partition's runs.
    """

    staging: LakePath
    target: LakePath
    partition_dir: LakePath
    token: str
    run_id: str
    writer: str = "landfall"


@dataclass(frozen=True)
class Commit:
    """One pointer in a partition's ``_commits/``: which attempt a run committed."""

    token: str
    run_id: str
    path: LakePath  # the committed attempt folder
    succeeded: bool
    committed_at: str
    legacy: bool = False  # an output of an earlier release, committed in place

    @property
    def started_ms(self) -> int:
        return run_started_ms(self.run_id)


class PartitionCommits:
    """The commits of a :class:`~landfall.lake.Lake`: what is committed, and committing.

    A part of :class:`~landfall.lake.Lake` (its base class), kept apart so the commit
    protocol reads on its own; it finds partitions through the lake's own methods.
    """

    if TYPE_CHECKING:

        def path(self, rel: str) -> LakePath: ...

        def partition_root(self, dataset: str, zone: Zone, partition: str) -> LakePath: ...

    def partition_dir(self, dataset: str, zone: Zone, partition: str) -> LakePath:
        """The committed output of one partition in one zone (raw: the landed folder).

        Where nothing is committed yet, the partition's folder, which holds no output:
        use :meth:`committed` to ask whether there is one.
        """
        folder = self.partition_root(dataset, zone, partition)
        if zone == "raw":
            return folder
        commit = self.committed(dataset, zone, partition)
        return commit.path if commit is not None else folder

    def commits(self, dataset: str, zone: Zone, partition: str) -> list[Commit]:
        """Every run committed to the partition, oldest first (failed reports included)."""
        folder = self.partition_root(dataset, zone, partition)
        found = []
        for pointer in (folder / COMMITS_DIR).iterdir():
            if not pointer.name.endswith(".json") or pointer.name.startswith("."):
                continue
            token = pointer.name[: -len(".json")].removesuffix(FAILED_SUFFIX)
            try:
                document = json.loads(pointer.read_bytes())
                found.append(
                    Commit(
                        token=token,
                        run_id=str(document["run_id"]),
                        path=self.path(str(document["path"])),
                        succeeded=bool(document.get("succeeded", True)),
                        committed_at=str(document.get("committed_at", "")),
                    )
                )
            except (OSError, ValueError, KeyError, TypeError):
                continue  # a pointer being written or damaged names no output
        if not found and (folder / MANIFEST_NAME).is_file():
            found.append(_legacy_commit(folder))
        return sorted(found, key=lambda commit: (commit.token, commit.succeeded))

    def committed(self, dataset: str, zone: Zone, partition: str) -> Commit | None:
        """The partition's committed output: the newest run that succeeded."""
        succeeded = [c for c in self.commits(dataset, zone, partition) if c.succeeded]
        return succeeded[-1] if succeeded else None

    def output_of_run(
        self, dataset: str, zone: Zone, partition: str, run_id: str
    ) -> LakePath | None:
        """The output ``run_id`` committed to the partition, else the committed one."""
        found = self.commits(dataset, zone, partition)
        own = [c for c in found if c.run_id == run_id and c.succeeded]
        if own:
            return own[-1].path
        succeeded = [c for c in found if c.succeeded]
        return succeeded[-1].path if succeeded else None

    def committed_partitions(self, dataset: str, zone: Zone) -> dict[str, LakePath]:
        """Each partition of the zone with a committed output, and where it is."""
        found = {}
        for folder in self.path(f"{dataset}/{zone}").iterdir():
            if folder.name.startswith(("_", ".")):
                continue
            commit = self.committed(dataset, zone, folder.name)
            if commit is not None:
                found[folder.name] = commit.path
        return found

    # ------------------------------------------------------------------ writes

    def stage_output(
        self,
        dataset: str,
        zone: Zone,
        partition: str,
        run_id: str,
        writer: str = "landfall",
        *,
        supersede: bool = False,
    ) -> PartitionOutput:
        """A fresh attempt folder for one output of ``run_id``, and its commit token.

        The folder is not created: the stage's writer does that (Spark, pyarrow). The
        attempt is recorded under the writer's name until it is committed or
        discarded, so a restarted writer can remove what a crash left
        (:meth:`remove_abandoned`). ``supersede`` (a replay redoing the run on purpose):
        the token sorts after every earlier commit of the same run, so the new output
        replaces the run's own, and still never a newer run's.
        """
        folder = self.partition_root(dataset, zone, partition)
        token = fencing_token(run_id, unknown_start_ms=time.time_ns() // 1_000_000)
        if supersede:
            token += f".{time.time_ns() // 1_000_000:013d}"
        attempt = folder / RUNS_DIR / f"{token}.{uuid.uuid4().hex[:8]}"
        output = PartitionOutput(
            staging=attempt,
            target=attempt,
            partition_dir=folder,
            token=token,
            run_id=run_id,
            writer=_safe_name(writer),
        )
        self._inflight(output).write_bytes(
            json.dumps(
                {"path": attempt.rel, **_process_identity(), "started_at": time.time()}
            ).encode()
        )
        return output

    def commit_partition(
        self,
        output: PartitionOutput,
        manifest: dict[str, Any],
        *,
        succeeded: bool = True,
        fenced: bool = True,
    ) -> LakePath:
        """Write the attempt's manifest, then its pointer: the output is committed.

        Returns the committed folder: the attempt's own, or, when another writer
        committed the same run first, that writer's (equal) output, which stands.
        Raises StaleCommitError when a newer run committed the partition already.
        ``succeeded=False`` keeps a failed run's output (a FAILED report) in the
        partition's history without making it the committed one. ``fenced=False``
        (reports) commits an older run's output into the history too, where it never
        becomes the committed one over a newer run's.

        Longer than most on purpose: the protocol's steps and the two races it settles
        (a newer run first, the same run twice) read as one sequence.
        """
        if not output.staging.exists():
            raise StageFailedError(
                f"nothing was written to {output.staging.rel}; nothing to commit"
            )
        (output.staging / MANIFEST_NAME).write_bytes(json_bytes(manifest))
        folder = output.partition_dir
        dataset, zone, partition = folder.rel.split("/")[-3:]
        existing = self.commits(dataset, zone, partition)  # type: ignore[arg-type]
        newer = [c for c in existing if c.token > output.token]
        if newer and fenced:
            self.discard(output)
            raise StaleCommitError(
                f"{folder.rel}: run {newer[-1].run_id} started later and committed it first; "
                f"this run ({output.run_id}) is older, so its output was not committed"
            )
        same = [c for c in existing if c.token == output.token and c.succeeded == succeeded]
        if same:
            # The same run, done twice (a redelivery racing its first delivery): the
            # output downstream may already read stays; this equal one goes, and the
            # caller announces the one that stands.
            self.discard(output)
            output.target = same[-1].path
            return output.target
        pointer = {
            "run_id": output.run_id,
            "path": output.staging.rel,
            "succeeded": succeeded,
            "committed_at": datetime.now(UTC).isoformat(),
            **_process_identity(),
        }
        name = f"{output.token}{'' if succeeded else FAILED_SUFFIX}.json"
        try:
            (folder / COMMITS_DIR / name).create_new(json_bytes(pointer))
        except FileExistsError:
            # The same run's other writer created the pointer between our look and
            # ours: its output stands, as in the `same` case above.
            self.discard(output)
            theirs = [
                c
                for c in self.commits(dataset, zone, partition)  # type: ignore[arg-type]
                if c.token == output.token and c.succeeded == succeeded
            ]
            if not theirs:
                raise StageFailedError(
                    f"{folder.rel}/{COMMITS_DIR}/{name} exists but names no output: "
                    "another writer's pointer that cannot be read"
                ) from None
            output.target = theirs[-1].path
            return output.target
        self._inflight(output).remove()
        return output.target

    def discard(self, output: PartitionOutput) -> None:
        """Remove an attempt that will not be committed."""
        output.staging.remove()
        self._inflight(output).remove()

    def _inflight(self, output: PartitionOutput) -> LakePath:
        # One entry per attempt, under its writer and host: a restart lists its own.
        name = output.staging.rel.replace("/", "~")
        return self.path(f"{INFLIGHT_DIR}/{output.writer}/{socket.gethostname()}/{name}.json")

    def remove_abandoned(self, writer: str) -> list[str]:
        """Remove attempts this host's ``writer`` left uncommitted when its process died.

        Only attempts whose recorded process is gone: a live sibling (a second replica
        on this host) keeps its own. Returns the lake-relative folders removed.
        """
        removed = []
        for entry in self.path(f"{INFLIGHT_DIR}/{writer}/{socket.gethostname()}").iterdir():
            try:
                record = json.loads(entry.read_bytes())
            except (OSError, ValueError):
                continue
            if writer_alive(record):
                continue
            attempt = self.path(str(record.get("path", "")))
            if (
                attempt.rel
                and RUNS_DIR in attempt.rel.split("/")
                and not self._is_committed(attempt)
            ):
                attempt.remove()
                removed.append(attempt.rel)
            entry.remove()
        return removed

    def _is_committed(self, attempt: LakePath) -> bool:
        parts = attempt.rel.split("/")
        dataset, zone, partition = parts[0], parts[1], parts[2]
        return any(c.path == attempt for c in self.commits(dataset, zone, partition))  # type: ignore[arg-type]


def _legacy_commit(folder: LakePath) -> Commit:
    """An output an earlier release committed in place (files in the partition folder)."""
    try:
        manifest = json.loads((folder / MANIFEST_NAME).read_bytes())
    except (OSError, ValueError):
        manifest = {}
    run_id = str(manifest.get("run_id", "")) if isinstance(manifest, dict) else ""
    return Commit(
        token=fencing_token(run_id),
        run_id=run_id,
        path=folder,
        succeeded=True,
        committed_at=str(manifest.get("committed_at", "")) if isinstance(manifest, dict) else "",
        legacy=True,
    )


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:64] or "landfall"


def _process_identity() -> dict[str, Any]:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid, "pid_started": started_at(pid)}


def writer_alive(record: dict[str, Any]) -> bool:
    """Whether the process an inflight record names still runs (on this host)."""
    pid = record.get("pid")
    if not isinstance(pid, int) or record.get("host") != socket.gethostname():
        return False
    if not pid_alive(pid):
        return False
    started = record.get("pid_started")
    return started is None or started_at(pid) == started  # not a later process's pid
