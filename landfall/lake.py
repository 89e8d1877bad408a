"""The lake: partition paths, atomic partition commits and manifests.

Layout (DESIGN.md §3)::

    <lake>/<dataset>/raw/<partition>/            landed by upstream (read-only to landfall)
    <lake>/<dataset>/<zone>/<partition>/         one committed output per stage
    <lake>/<dataset>/<zone>/_staging/...         outputs being written, never read

A stage writes into a staging directory beside its target, puts ``_manifest.json`` in
it, then commits it with renames on the same filesystem: a reader sees the previous
output or the new one, never half of one, and a rerun replaces instead of appending.
The root is a local path for now; Hadoop URIs (s3a://, hdfs://) are a later step.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from landfall.errors import PathOutsideLakeError, StageFailedError

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
        """Resolve a path named by an event under the root; reject any that escape it."""
        candidate = Path(relative)
        # Absolute paths are accepted only when they already point inside the lake, and
        # symlinks are resolved first so a link cannot smuggle a read out of the root.
        resolved = (candidate if candidate.is_absolute() else self.root / candidate).resolve()
        if resolved != self.root and self.root not in resolved.parents:
            raise PathOutsideLakeError(
                f"path {relative!r} resolves to {resolved}, outside the lake root {self.root}"
            )
        return resolved

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
    temporary.write_text(json.dumps(document, indent=2, sort_keys=True, default=str))
    os.replace(temporary, path)
