"""The lake: partition paths, the commit protocol and manifests, on any store.

Layout (DESIGN.md §3)::

    <lake>/<dataset>/raw/<partition>/                 landed by upstream (read-only to landfall;
                                                      a dataset's raw_path may put it elsewhere)
    <lake>/<dataset>/<zone>/<partition>/_runs/<attempt>/    one attempt's output + _manifest.json
    <lake>/<dataset>/<zone>/<partition>/_commits/<token>.json   one pointer per committed run

The root is a local folder (a plain path or ``file://``), an object store
(``s3a://bucket/prefix``) or HDFS (``hdfs://namenode:port/path``, through WebHDFS:
:mod:`landfall.webhdfs`); :class:`LakePath` does the few file operations landfall
needs on either, through pyarrow's filesystems, and its ``str()`` is the location
Spark reads and writes.

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

What a stage reads is confined (:meth:`Lake.input_dir`): the folder must lie below its
zone of its own dataset (``<dataset>/raw/`` for a landed partition), and, on a local
lake, no symlink may sit on the way to it or inside it, because a link would let a
read leave the lake.
"""

from __future__ import annotations

import json
import os
import posixpath
import re
import socket
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pyarrow import fs as pafs

from landfall.datasets import (
    RAW_PATH_DEFAULT,
    fill_path_template,
    relative_to_lake,
    template_parts,
)
from landfall.errors import ConfigError, PathOutsideLakeError, StageFailedError
from landfall.processes import pid_alive, started_at
from landfall.redact import redact_tree
from landfall.run_ids import fencing_token, run_started_ms

if TYPE_CHECKING:
    from landfall.config import ObjectStoreSettings, Settings

__all__ = [
    "ANNOUNCED_NAME",
    "MANIFEST_NAME",
    "Commit",
    "Lake",
    "LakePath",
    "PartitionOutput",
    "StaleCommitError",
    "Zone",
    "read_manifest",
    "write_json_atomically",
]

MANIFEST_NAME = "_manifest.json"
# The completion event a stage announced for its output, kept beside it (stage.py).
ANNOUNCED_NAME = "_announced.avro"
RUNS_DIR = "_runs"
COMMITS_DIR = "_commits"
# Attempts being written, per writer: what a restarted service removes (its own only).
INFLIGHT_DIR = "_landfall/inflight"
# A failed run's pointer (its FAILED report): kept in the history, never the committed one.
FAILED_SUFFIX = ".failed"

Zone = Literal["raw", "validated", "quarantine", "features", "predictions", "reports"]
OUTPUT_ZONES: tuple[Zone, ...] = ("validated", "quarantine", "features", "predictions", "reports")

# A path an event names is a few folder names; one far longer is not a path but an
# attack on whatever processes it, so it is refused before any work that grows with it.
MAX_PATH_CHARS = 1024
# How much of a refused path an error message repeats: errors travel into events,
# reports and logs, which must not carry a megabyte of someone's input.
_SHOWN_CHARS = 120
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_PARTITION_SHAPE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}(T[0-9]{2})?")
_OBJECT_STORE_SCHEMES = {"s3a", "s3", "s3n"}


def _shown(path: str) -> str:
    """``path`` quoted for a message, cut short if long."""
    if len(path) <= _SHOWN_CHARS:
        return repr(path)
    return repr(path[:_SHOWN_CHARS]) + f"... ({len(path)} characters)"


class StaleCommitError(StageFailedError):
    """A newer run of the partition committed first: this older run's output is refused."""


def _complete_temporary(target: str, data: bytes) -> str:
    """``data`` written whole to a hidden temporary file beside local ``target``; its path.

    What the caller then moves into place in one step (a rename, or a link that refuses
    an existing target), so no reader ever sees half a file.
    """
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    folder, name = posixpath.split(target)
    temporary = f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(data)
    return temporary


class LakePath:
    """A file or folder in the lake, with the few pathlib operations landfall uses.

    ``str()`` is the location Spark and pyarrow read (a local absolute path, or
    ``s3a://bucket/key``); ``rel`` is the lake-relative form events carry.
    """

    __slots__ = ("lake", "rel")

    def __init__(self, lake: Lake, rel: str) -> None:
        self.lake = lake
        self.rel = rel.strip("/")

    # -- names
    def __truediv__(self, part: str) -> LakePath:
        return LakePath(self.lake, f"{self.rel}/{part}" if self.rel else str(part))

    def joinpath(self, *parts: str) -> LakePath:
        path = self
        for part in parts:
            path = path / part
        return path

    @property
    def name(self) -> str:
        return self.rel.rsplit("/", 1)[-1]

    @property
    def parent(self) -> LakePath:
        return LakePath(self.lake, self.rel.rsplit("/", 1)[0] if "/" in self.rel else "")

    def __str__(self) -> str:
        return self.lake.location(self.rel)

    def __fspath__(self) -> str:
        if not self.lake.is_local:
            raise TypeError(f"{self} is in an object store, not on a local filesystem")
        return self.lake.location(self.rel)

    def __repr__(self) -> str:
        return f"LakePath({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LakePath):
            return (self.lake.uri, self.rel) == (other.lake.uri, other.rel)
        if isinstance(other, Path) and self.lake.is_local:
            return Path(str(self)) == other
        return NotImplemented

    def __hash__(self) -> int:
        return hash((self.lake.uri, self.rel))

    @property
    def _fs_path(self) -> str:
        return self.lake.fs_path(self.rel)

    # -- queries
    def _type(self) -> pafs.FileType:
        return self.lake.fs.get_file_info(self._fs_path).type

    def exists(self) -> bool:
        return self._type() != pafs.FileType.NotFound

    def is_dir(self) -> bool:
        return self._type() == pafs.FileType.Directory

    def is_file(self) -> bool:
        return self._type() == pafs.FileType.File

    def iterdir(self) -> Iterator[LakePath]:
        """The folder's entries, sorted by name (none if it does not exist)."""
        selector = pafs.FileSelector(self._fs_path, allow_not_found=True)
        names = sorted(info.base_name for info in self.lake.fs.get_file_info(selector))
        return iter([self / name for name in names])

    def files(self) -> list[LakePath]:
        """Every file below this folder, at any depth."""
        selector = pafs.FileSelector(self._fs_path, recursive=True, allow_not_found=True)
        base = self._fs_path.rstrip("/") + "/"
        return [
            self / info.path[len(base) :]
            for info in self.lake.fs.get_file_info(selector)
            if info.type == pafs.FileType.File and info.path.startswith(base)
        ]

    # -- content
    def read_bytes(self) -> bytes:
        try:
            with self.lake.fs.open_input_stream(self._fs_path) as stream:
                return bytes(stream.read())
        except FileNotFoundError:
            raise
        except OSError as exc:
            text = str(exc)
            if any(m in text for m in ("does not exist", "not found", "NoSuchKey")):
                raise FileNotFoundError(self.rel) from None
            raise

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> None:
        """Write the whole file so no reader sees it half written (one PUT on a store)."""
        self.lake.write_atomically(self.rel, data)

    def write_text(self, text: str, encoding: str = "utf-8") -> None:
        self.write_bytes(text.encode(encoding))

    def create_new(self, data: bytes) -> None:
        """Create the file whole, only if it does not exist yet (:meth:`Lake.create_new`)."""
        self.lake.create_new(self.rel, data)

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        """Create the folder (object stores have none to create: a no-op there)."""
        if self.lake.is_local:
            Path(str(self)).mkdir(parents=parents, exist_ok=exist_ok)

    def remove(self) -> None:
        """Remove a folder and everything below it, or a file; nothing if absent."""
        kind = self._type()
        try:
            if kind == pafs.FileType.Directory:
                self.lake.fs.delete_dir(self._fs_path)
            elif kind == pafs.FileType.File:
                self.lake.fs.delete_file(self._fs_path)
        except FileNotFoundError:
            pass


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


class Lake:
    """Paths and commits under one lake root (a local folder or an object store)."""

    _store: ObjectStoreSettings | None

    def __init__(
        self,
        root: str | Path,
        fs: pafs.FileSystem | None = None,
        fs_root: str | None = None,
    ) -> None:
        # dataset -> its raw_path template, lake-relative (Lake.from_settings fills it).
        self._raw_paths: dict[str, str] = {}
        text = str(root)
        match = _URI.match(text)
        scheme = match.group(1).lower() if match else "file"
        if scheme == "file" and match:
            text = text[len("file://") :]
        if scheme == "file":
            self.is_local = True
            self._store = None
            local = Path(text).resolve()
            self.uri = str(local)
            self.fs = fs or pafs.LocalFileSystem()
            self._fs_root = str(local)
            self._spark_root = str(local)
        else:
            self.is_local = False
            self._store = None
            if scheme == "hdfs" and fs is None:
                from landfall.object_store import arrow_filesystem

                # WebHDFS on the NameNode's default HTTP port; from_settings passes the
                # configured one.
                fs, fs_root = arrow_filesystem(text, _no_object_store())
            if scheme not in _OBJECT_STORE_SCHEMES and fs is None:
                raise ConfigError(
                    f"lake_root {text!r}: landfall reads and writes local lakes, S3 "
                    "(s3a://) and HDFS (hdfs://); other stores (abfss://) are not supported yet"
                )
            bucket_and_prefix = text[match.end() :].strip("/") if match else text
            if fs is None:
                fs = (
                    pafs.S3FileSystem()
                )  # AWS defaults; Lake.from_settings passes the configured one
            self.fs = fs
            self._fs_root = fs_root if fs_root is not None else bucket_and_prefix
            # Spark's connector for S3 is s3a, whatever the scheme the user wrote.
            self._spark_root = (
                f"s3a://{bucket_and_prefix}"
                if scheme in _OBJECT_STORE_SCHEMES
                else text.rstrip("/")
            )
            self.uri = self._spark_root

    @classmethod
    def from_settings(cls, settings: Settings) -> Lake:
        """The configured lake, with the object store's endpoint and credentials."""
        uri = settings.lake_uri
        if _URI.match(uri) and not uri.startswith("file://"):
            from landfall.object_store import arrow_filesystem

            fs, fs_root = arrow_filesystem(uri, settings.object_store, settings.hdfs)
            lake = cls(uri, fs=fs, fs_root=fs_root)
            lake._store = settings.object_store
        else:
            lake = cls(uri)
        for name, dataset in settings.datasets.items():
            try:
                lake._raw_paths[name] = relative_to_lake(dataset.raw_path, uri)
            except ValueError as exc:  # load_settings refuses it first; settings built by hand
                raise ConfigError(f"datasets.{name}.raw_path: {exc}") from None
        return lake

    def check_usable(self) -> None:
        """Raise one clear error naming the setting if the lake's store cannot be used.

        An unreachable store (RetryableError), refused credentials, a missing bucket, a
        root that is a file (StageFailedError).
        """
        from landfall.object_store import check_reachable

        check_reachable(self.fs, self._fs_root, self.uri, self._store)

    # ------------------------------------------------------------------ locations

    @property
    def root(self) -> LakePath:
        return LakePath(self, "")

    def fs_path(self, rel: str) -> str:
        """The path of a lake-relative location inside :attr:`fs`."""
        return f"{self._fs_root}/{rel}" if rel else self._fs_root

    def location(self, rel: str) -> str:
        """Where Spark finds a lake-relative location (absolute path or s3a:// URI)."""
        return f"{self._spark_root}/{rel}" if rel else self._spark_root

    def path(self, rel: str) -> LakePath:
        return LakePath(self, rel)

    def relative(self, path: LakePath | Path | str) -> str:
        """The lake-relative form of a path, as events carry it."""
        if isinstance(path, LakePath):
            return path.rel
        if isinstance(path, Path) and self.is_local:
            return path.resolve().relative_to(self.uri).as_posix()
        text = str(path)
        prefix = self._spark_root.rstrip("/") + "/"
        if text.startswith(prefix):
            return text[len(prefix) :]
        return text.strip("/")

    def write_atomically(self, rel: str, data: bytes) -> None:
        """Replace a file whole: a temporary file and a rename locally, one PUT on a store."""
        target = self.fs_path(rel)
        if self.is_local:
            os.replace(_complete_temporary(target, data), target)
            return
        with self.fs.open_output_stream(target) as stream:
            stream.write(data)

    def create_new(self, rel: str, data: bytes) -> None:
        """Create a file that must not exist yet, whole: FileExistsError if it does.

        A commit pointer is created so: of two writers racing to commit the same run,
        exactly one succeeds, and the other learns it lost. Locally a hard link of a
        complete temporary file (link() never replaces), on HDFS a rename that refuses
        an existing target. An S3 PUT cannot refuse: there the later writer's pointer
        replaces the earlier one, which names an equal output of the same run.
        """
        target = self.fs_path(rel)
        if self.is_local:
            temporary = _complete_temporary(target, data)
            try:
                os.link(temporary, target)
            finally:
                os.unlink(temporary)
            return
        from landfall.webhdfs import handler_of

        hdfs = handler_of(self.fs)
        if hdfs is not None:
            hdfs.create_new(target, data)
            return
        self.write_atomically(rel, data)

    # ------------------------------------------------------------------ partitions

    def raw_path_template(self, dataset: str) -> str:
        """The dataset's ``raw_path``, relative to the lake root."""
        return self._raw_paths.get(dataset, RAW_PATH_DEFAULT)

    def raw_zone(self, dataset: str) -> str:
        """The folder every landed partition of the dataset lies below (lake-relative).

        Its ``raw_path`` up to the folder that holds ``{partition}``: what an event may
        name as a landed folder must lie inside it.
        """
        parts = template_parts(self.raw_path_template(dataset), dataset=dataset)
        assert parts is not None  # a raw_path holds {partition}: checked at load
        return parts[0]

    def partition_root(self, dataset: str, zone: Zone, partition: str) -> LakePath:
        """The folder of one partition in one zone (for output zones: runs and commits).

        For ``raw``, where the dataset's ``raw_path`` puts it: the one place every
        reader of landed data (validator, backfill, reconcile, the API) learns it.
        """
        if zone == "raw":
            template = self.raw_path_template(dataset)
            return self.path(fill_path_template(template, dataset=dataset, partition=partition))
        return LakePath(self, f"{dataset}/{zone}/{partition}")

    def template_partitions(self, template: str, **values: str) -> dict[str, LakePath]:
        """Each existing folder a lake-relative ``{partition}`` template names, by partition.

        Only partition-shaped names (``YYYY-MM-DD``, ``YYYY-MM-DDTHH``) count, so they
        sort by time; a template without ``{partition}`` names none.
        """
        parts = template_parts(template, **values)
        if parts is None:
            return {}
        before, pattern, after = parts
        found = {}
        for entry in self.path(before).iterdir():
            match = pattern.match(entry.name)
            if match is None or not _PARTITION_SHAPE.fullmatch(match["partition"]):
                continue
            folder = entry / after if after else entry
            if folder.is_dir():
                found[match["partition"]] = folder
        return found

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

    # ------------------------------------------------------------------ reads

    def resolve(self, relative: str) -> LakePath:
        """Resolve a path named by an event under the root; reject any that escape it.

        Only says whether a path is in the lake at all; what a stage reads goes through
        :meth:`input_dir`, which also confines it to its zone and refuses symlinks.
        """
        _check_plain(relative)
        if self.is_local:
            candidate = Path(relative)
            # Absolute paths are accepted only when they already point inside the lake,
            # and symlinks are resolved first so a link cannot smuggle a read out.
            root = Path(self.uri)
            resolved = (candidate if candidate.is_absolute() else root / candidate).resolve()
            if resolved != root and root not in resolved.parents:
                raise PathOutsideLakeError(f"path {_shown(relative)} is outside the lake root")
            return self.path(resolved.relative_to(root).as_posix())
        normal = posixpath.normpath(relative)
        if normal.startswith(("/", "..")):
            raise PathOutsideLakeError(f"path {_shown(relative)} is outside the lake root")
        return self.path("" if normal == "." else normal)

    def input_dir(self, named: str | None, *, dataset: str, zone: Zone, partition: str) -> LakePath:
        """The folder a stage reads for one batch: below ``<dataset>/<zone>/``, no symlinks.

        ``named`` is the lake-relative path an event gave (a data-landed ``path``, an
        upstream stage's ``output_path``), None for the partition's own folder in
        ``zone`` (its committed output). Refused, with PathOutsideLakeError naming the
        path and the rule: an absolute path, one outside the lake root, the zone folder
        itself or anything outside it (another zone, another dataset), and a symlink
        anywhere on the way to the folder or inside it. Checked before anything reads
        the folder or stages output for it. A folder that does not exist is returned
        as it is: whether that is an error (and a retryable one) is the caller's call.
        """
        what = f"{zone} input"
        # The default path takes the same checks: its parts come from an event too.
        if named is None:
            named = self.partition_dir(dataset, zone, partition).rel
        _check_plain(named, what)
        if named.startswith("/"):
            raise PathOutsideLakeError(
                f"{what} {_shown(named)} is refused: an event's path is relative to the "
                "lake root, never absolute"
            )
        # Lexical normalisation is the real one here: every component of the result is
        # checked below not to be a symlink, so none can lead anywhere else.
        normal = posixpath.normpath(named)
        parts = [] if normal == "." else normal.split("/")
        if parts[:1] == [".."]:
            raise PathOutsideLakeError(f"{what} {_shown(named)} is outside the lake root")
        # Landed data lies where the dataset's raw_path puts it; outputs in their zone.
        root = self.raw_zone(dataset).split("/") if zone == "raw" else [dataset, zone]
        zone_dir = "/".join(root) + "/"
        depth = len(root)
        if len(parts) <= depth or parts[:depth] != root:
            raise PathOutsideLakeError(
                f"{what} {_shown(named)} is refused: it must be a folder inside {zone_dir} "
                f"(the {zone} zone of dataset {dataset})"
            )
        if parts[depth] == "_staging" or (
            len(parts) > depth + 1 and parts[depth + 1] == COMMITS_DIR
        ):
            raise PathOutsideLakeError(
                f"{what} {_shown(named)} is refused: "
                f"{zone_dir}{'/'.join(parts[depth : depth + 2])}/ holds the lake's own "
                "bookkeeping, never data to read"
            )
        if zone == "raw" and self._owned_by_landfall(parts, dataset):
            # A raw_path like "{dataset}/{partition}" puts landed folders beside
            # landfall's own zones; those are never read as landed data.
            raise PathOutsideLakeError(
                f"{what} {_shown(named)} is refused: it lies in landfall's own "
                f"{'/'.join(parts[:2])}/ folder, not where data lands"
            )
        path = self.path("/".join(parts))
        if self.is_local:
            self._refuse_symlinks(parts, what)
        elif not path.exists():
            # Tell "not landed yet" from a store that cannot be used at all (a missing
            # bucket reads as an empty one), which names the setting to fix.
            self.check_usable()
        return path

    def _owned_by_landfall(self, parts: list[str], dataset: str) -> bool:
        if parts[0] == INFLIGHT_DIR.split("/")[0]:
            return True
        datasets = {dataset, *self._raw_paths}
        return len(parts) > 1 and parts[0] in datasets and parts[1] in OUTPUT_ZONES

    def _refuse_symlinks(self, parts: list[str], what: str) -> None:
        """Raise if a component of the path below the root, or anything inside it, is a link."""
        root = Path(self.uri)
        current, mode = root, 0
        for depth, part in enumerate(parts, start=1):
            current = current / part
            try:
                mode = os.lstat(current).st_mode
            except (FileNotFoundError, NotADirectoryError):
                return  # the folder does not exist: nothing further can be a link
            except OSError as exc:
                raise _unreadable(what, "/".join(parts), "/".join(parts[:depth]), exc) from None
            if stat.S_ISLNK(mode):
                raise PathOutsideLakeError(
                    _symlink_message(what, "/".join(parts), "/".join(parts[:depth]))
                )
        if not stat.S_ISDIR(mode):
            return
        # One pass over the folder, never following a link: every entry is looked at
        # once, so the cost is that of the listing Spark makes anyway.
        pending = [current]
        while pending:
            folder = pending.pop()
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        inside = Path(entry.path).relative_to(root).as_posix()
                        if entry.is_symlink():
                            raise PathOutsideLakeError(
                                _symlink_message(what, "/".join(parts), inside)
                            )
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(Path(entry.path))
            except PathOutsideLakeError:
                raise
            except OSError as exc:
                inside = folder.relative_to(root).as_posix()
                raise _unreadable(what, "/".join(parts), inside, exc) from None

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
        """
        if not output.staging.exists():
            raise StageFailedError(
                f"nothing was written to {output.staging.rel}; nothing to commit"
            )
        (output.staging / MANIFEST_NAME).write_bytes(_json_bytes(manifest))
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
            (folder / COMMITS_DIR / name).create_new(_json_bytes(pointer))
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


def _no_object_store() -> ObjectStoreSettings:
    from landfall.config import ObjectStoreSettings

    return ObjectStoreSettings()


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


def _check_plain(path: object, what: str = "path") -> None:
    """Refuse, in constant time, what cannot be a lake path at all."""
    if not isinstance(path, str) or not path:
        raise PathOutsideLakeError(f"{what} {path!r} is not a lake-relative path")
    # Length first: nothing below may spend time in proportion to a hostile input.
    if len(path) > MAX_PATH_CHARS:
        raise PathOutsideLakeError(
            f"{what} {_shown(path)} is refused: longer than {MAX_PATH_CHARS} characters"
        )
    if "\x00" in path:
        # The OS would refuse it with a ValueError, not a landfall error.
        raise PathOutsideLakeError(f"{what} {_shown(path)} is refused: it holds a NUL character")


def _symlink_message(what: str, path: str, link: str) -> str:
    # The link's target is not named: it may be a server path outside the lake.
    which = "it" if link == path else repr(link)
    return (
        f"{what} {path!r} is refused: {which} is a symbolic link, and landfall follows no "
        "link in the lake (it could lead a read outside it)"
    )


def _unreadable(what: str, path: str, where: str, exc: OSError) -> StageFailedError:
    # strerror only: str(exc) would repeat the absolute path.
    return StageFailedError(f"{what} {path!r}: cannot check {where!r}: {exc.strerror}")


def _json_bytes(document: dict[str, Any]) -> bytes:
    # Manifests, pointers and reports: anyone who reads the lake reads them: no secret.
    return json.dumps(redact_tree(document), indent=2, sort_keys=True, default=str).encode()


def read_manifest(directory: LakePath | Path) -> dict[str, Any]:
    """The manifest of a committed output directory."""
    manifest_path = directory / MANIFEST_NAME
    try:
        loaded: dict[str, Any] = json.loads(manifest_path.read_bytes())
    except FileNotFoundError:
        where = manifest_path.rel if isinstance(manifest_path, LakePath) else manifest_path
        raise StageFailedError(f"no manifest at {where}: the input was never committed") from None
    return loaded


def write_json_atomically(path: LakePath | Path, document: dict[str, Any]) -> None:
    """Write a JSON document so readers never see it half written."""
    if isinstance(path, LakePath):
        path.write_bytes(_json_bytes(document))
        return
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    temporary.write_bytes(_json_bytes(document))
    os.replace(temporary, path)
