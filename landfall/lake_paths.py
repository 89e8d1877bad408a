"""Lake paths: the layout's names, :class:`LakePath`, and manifests.

The names of the folders and files the lake keeps (DESIGN.md §3, :mod:`landfall.lake`),
the zones, and :class:`LakePath`, the few pathlib operations landfall needs on a
local folder, an object store or HDFS alike.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pyarrow import fs as pafs

from landfall.errors import StageFailedError
from landfall.redact import redact_tree

if TYPE_CHECKING:
    from landfall.lake import Lake

__all__ = [
    "ANNOUNCED_NAME",
    "COMMITS_DIR",
    "FAILED_SUFFIX",
    "INFLIGHT_DIR",
    "MANIFEST_NAME",
    "OUTPUT_ZONES",
    "RUNS_DIR",
    "LakePath",
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


def json_bytes(document: dict[str, Any]) -> bytes:
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
        path.write_bytes(json_bytes(document))
        return
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    temporary.write_bytes(json_bytes(document))
    os.replace(temporary, path)
