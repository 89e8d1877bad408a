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

The commit protocol (attempt folders, pointers) is :mod:`landfall.lake_commits`;
the layout's names and :class:`LakePath` are :mod:`landfall.lake_paths`. Every name is
importable from here.

What a stage reads is confined (:meth:`Lake.input_dir`): the folder must lie below its
zone of its own dataset (``<dataset>/raw/`` for a landed partition), and, on a local
lake, no symlink may sit on the way to it or inside it, because a link would let a
read leave the lake.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from pyarrow import fs as pafs

from landfall.datasets import (
    RAW_PATH_DEFAULT,
    fill_path_template,
    relative_to_lake,
    template_parts,
)
from landfall.errors import ConfigError, PathOutsideLakeError, StageFailedError
from landfall.lake_commits import (
    Commit,
    PartitionCommits,
    PartitionOutput,
    StaleCommitError,
    writer_alive,
)
from landfall.lake_paths import (
    ANNOUNCED_NAME,
    COMMITS_DIR,
    FAILED_SUFFIX,
    INFLIGHT_DIR,
    MANIFEST_NAME,
    OUTPUT_ZONES,
    RUNS_DIR,
    LakePath,
    Zone,
    read_manifest,
    write_json_atomically,
)

if TYPE_CHECKING:
    from landfall.config import ObjectStoreSettings, Settings

__all__ = [
    "ANNOUNCED_NAME",
    "COMMITS_DIR",
    "FAILED_SUFFIX",
    "INFLIGHT_DIR",
    "MANIFEST_NAME",
    "OUTPUT_ZONES",
    "RUNS_DIR",
    "Commit",
    "Lake",
    "LakePath",
    "PartitionOutput",
    "StaleCommitError",
    "Zone",
    "read_manifest",
    "write_json_atomically",
    "writer_alive",
]

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


class Lake(PartitionCommits):
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


def _no_object_store() -> ObjectStoreSettings:
    from landfall.config import ObjectStoreSettings

    return ObjectStoreSettings()


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
