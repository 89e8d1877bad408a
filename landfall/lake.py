"""The lake: partition paths, atomic partition commits and manifests.

Layout (DESIGN.md §3)::

    <lake>/<dataset>/raw/<partition>/            landed by upstream (read-only to landfall)
    <lake>/<dataset>/<zone>/<partition>/         one committed output per stage
    <lake>/<dataset>/<zone>/_staging/...         outputs being written, never read

A stage writes into a staging directory beside its target, puts ``_manifest.json`` in
it, then commits it with renames on the same filesystem: a reader sees the previous
output or the new one, never half of one, and a rerun replaces instead of appending.
The root is a local path for now; Hadoop URIs (s3a://, hdfs://) are a later step.

What a stage reads is confined (:meth:`Lake.input_dir`): the folder must lie below its
zone of its own dataset (``<dataset>/raw/`` for a landed partition), and no symlink may
sit on the way to it or inside it, because a link would let a read leave the lake.
"""

from __future__ import annotations

import json
import os
import posixpath
import shutil
import stat
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from landfall.errors import PathOutsideLakeError, StageFailedError
from landfall.redact import redact_tree

__all__ = [
    "MANIFEST_NAME",
    "Lake",
    "PartitionOutput",
    "Zone",
    "read_manifest",
    "write_json_atomically",
]

MANIFEST_NAME = "_manifest.json"

Zone = Literal["raw", "validated", "quarantine", "features", "predictions", "reports"]

# A path an event names is a few folder names; one far longer is not a path but an
# attack on whatever processes it, so it is refused before any work that grows with it.
MAX_PATH_CHARS = 1024
# How much of a refused path an error message repeats: errors travel into events,
# reports and logs, which must not carry a megabyte of someone's input.
_SHOWN_CHARS = 120


def _shown(path: str) -> str:
    """``path`` quoted for a message, cut short if long."""
    if len(path) <= _SHOWN_CHARS:
        return repr(path)
    return repr(path[:_SHOWN_CHARS]) + f"... ({len(path)} characters)"


@dataclass(frozen=True)
class PartitionOutput:
    """Where one stage output is staged and where it is committed."""

    staging: Path
    target: Path


class Lake:
    """Paths and commits under one lake root."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root).resolve()

    def partition_dir(self, dataset: str, zone: Zone, partition: str) -> Path:
        """The committed directory of one dataset partition in one zone."""
        return self.root / dataset / zone / partition

    def resolve(self, relative: str) -> Path:
        """Resolve a path named by an event under the root; reject any that escape it.

        Only says whether a path is in the lake at all; what a stage reads goes through
        :meth:`input_dir`, which also confines it to its zone and refuses symlinks.
        """
        _check_plain(relative)
        candidate = Path(relative)
        # Absolute paths are accepted only when they already point inside the lake, and
        # symlinks are resolved first so a link cannot smuggle a read out of the root.
        resolved = (candidate if candidate.is_absolute() else self.root / candidate).resolve()
        if resolved != self.root and self.root not in resolved.parents:
            # Neither the resolved path nor the root is shown: both are server paths.
            raise PathOutsideLakeError(f"path {_shown(relative)} is outside the lake root")
        return resolved

    def input_dir(self, named: str | None, *, dataset: str, zone: Zone, partition: str) -> Path:
        """The folder a stage reads for one batch: below ``<dataset>/<zone>/``, no symlinks.

        ``named`` is the lake-relative path an event gave (a data-landed ``path``, an
        upstream stage's ``output_path``), None for the partition's own folder in
        ``zone``. Refused, with PathOutsideLakeError naming the path and the rule: an
        absolute path, one outside the lake root, the zone folder itself or anything
        outside it (another zone, another dataset), a staging folder, and a symlink
        anywhere on the way to the folder or inside it. Checked before anything reads
        the folder or stages output for it. A folder that does not exist is returned
        as it is: whether that is an error (and a retryable one) is the caller's call.
        """
        what = f"{zone} input"
        # The default path takes the same checks: its parts come from an event too.
        named = f"{dataset}/{zone}/{partition}" if named is None else named
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
        zone_dir = f"{dataset}/{zone}/"
        if len(parts) < 3 or parts[:2] != [dataset, zone]:
            raise PathOutsideLakeError(
                f"{what} {_shown(named)} is refused: it must be a folder inside {zone_dir} "
                f"(the {zone} zone of dataset {dataset})"
            )
        if parts[2] == "_staging":
            raise PathOutsideLakeError(
                f"{what} {_shown(named)} is refused: {zone_dir}_staging/ holds outputs "
                "being written, never read"
            )
        path = self.root.joinpath(*parts)
        self._refuse_symlinks(path, parts, what)
        return path

    def _refuse_symlinks(self, path: Path, parts: list[str], what: str) -> None:
        """Raise if a component of ``path`` below the root, or anything inside it, is a link."""
        current, mode = self.root, 0
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
        pending = [path]
        while pending:
            folder = pending.pop()
            try:
                with os.scandir(folder) as entries:
                    for entry in entries:
                        inside = Path(entry.path).relative_to(self.root).as_posix()
                        if entry.is_symlink():
                            raise PathOutsideLakeError(
                                _symlink_message(what, "/".join(parts), inside)
                            )
                        if entry.is_dir(follow_symlinks=False):
                            pending.append(Path(entry.path))
            except PathOutsideLakeError:
                raise
            except OSError as exc:
                inside = folder.relative_to(self.root).as_posix()
                raise _unreadable(what, "/".join(parts), inside, exc) from None

    def relative(self, path: Path) -> str:
        """The lake-relative form of a path, as events carry it."""
        return path.resolve().relative_to(self.root).as_posix()

    def stage_output(
        self, dataset: str, zone: Zone, partition: str, run_id: str
    ) -> PartitionOutput:
        """A fresh staging directory for one output, and its commit target."""
        target = self.partition_dir(dataset, zone, partition)
        staging = target.parent / "_staging" / f"{partition}.{run_id}.{uuid.uuid4().hex[:8]}"
        if staging.exists():
            shutil.rmtree(staging)
        staging.parent.mkdir(parents=True, exist_ok=True)
        return PartitionOutput(staging=staging, target=target)

    def commit_partition(self, output: PartitionOutput, manifest: dict[str, Any]) -> Path:
        """Write the manifest into the staged output, then swap it into place."""
        if not output.staging.is_dir():
            raise StageFailedError(f"nothing was written to {output.staging}; nothing to commit")
        write_json_atomically(output.staging / MANIFEST_NAME, manifest)
        target = output.target
        target.parent.mkdir(parents=True, exist_ok=True)
        retired = target.parent / "_staging" / f"{target.name}.retired.{uuid.uuid4().hex[:8]}"
        # Two renames: between them the partition is absent (a reader finds nothing
        # rather than a mix); a directory cannot be replaced by rename in one step.
        if target.exists():
            os.rename(target, retired)
        os.rename(output.staging, target)
        if retired.exists():
            shutil.rmtree(retired, ignore_errors=True)
        return target

    def discard(self, output: PartitionOutput) -> None:
        """Remove a staged output that will not be committed."""
        shutil.rmtree(output.staging, ignore_errors=True)


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


def read_manifest(directory: Path) -> dict[str, Any]:
    """The manifest of a committed output directory."""
    manifest_path = directory / MANIFEST_NAME
    try:
        loaded: dict[str, Any] = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise StageFailedError(
            f"no manifest at {manifest_path}: the input was never committed"
        ) from None
    return loaded


def write_json_atomically(path: Path, document: dict[str, Any]) -> None:
    """Write a JSON document through a temporary file so readers never see it half written."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    # Manifests and reports: anyone who reads the lake reads them, so no secret in them.
    text = json.dumps(redact_tree(document), indent=2, sort_keys=True, default=str)
    temporary.write_text(text)
    os.replace(temporary, path)
