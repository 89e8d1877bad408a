"""The wheel works on its own: built, installed in a fresh venv, run outside the checkout.

The fresh venv borrows the project venv's third-party packages through a .pth file (a
plain path entry: the editable landfall's own .pth inside that folder is not processed),
so nothing is downloaded and the only landfall it can import is the wheel's. It must
show the CLI, decode events with the contracts it carries (current and kept versions)
and load the demo's configuration; a wheel without schemas/ fails the decoding.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from io import BytesIO
from pathlib import Path

import fastavro
import pytest
import setuptools
from packaging.requirements import Requirement
from packaging.version import Version

from landfall.codec import EventCodec
from landfall.contracts import SCHEMA_DIR, EventType, new_event
from landfall.schema_history import released_versions

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(240)]

ROOT = Path(__file__).resolve().parents[2]
# What building the wheel reads; anything else in the checkout stays out of the copy.
BUILD_INPUTS = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md")
BUILD_TREES = ("landfall", "services", "schemas")

# Runs inside the fresh venv: where landfall came from, and what it decodes.
PROBE = """
import json, sys
import landfall, landfall.contracts as contracts
from landfall.codec import EventCodec
from landfall.config import load_settings
from landfall.demo import DEMO_CONFIG
from landfall.rendering import render

codec = EventCodec()
decoded = []
for line in sys.stdin:
    kind, payload = line.split(" ", 1)
    data = bytes.fromhex(payload) if kind == "avro" else payload.strip().encode()
    event_type, record = codec.decode(data, topic="t", accept_json=kind == "json")
    decoded.append([event_type.value, json.loads(json.dumps(record, default=str))])
print(json.dumps({
    "landfall": landfall.__file__,
    "schema_dir": str(contracts.SCHEMA_DIR),
    "decoded": decoded,
    "demo_datasets": sorted(load_settings(DEMO_CONFIG).datasets),
    "login_page": render("login.html", next_url="/", problem=None),
}))
"""


def _run(args: list[str], *, cwd: Path, stdin: str | None = None) -> str:
    # No PYTHONPATH or settings from the test run: the fresh venv sees only what it holds.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PYTHON", "VIRTUAL_ENV", "LANDFALL_"))
    }
    done = subprocess.run(
        args, cwd=cwd, env=env, input=stdin, capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, f"{args[:4]} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _build_wheel(tmp: Path) -> Path:
    source = tmp / "source"
    source.mkdir()
    for name in BUILD_INPUTS:
        shutil.copy2(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    for tree in BUILD_TREES:
        shutil.copytree(ROOT / tree, source / tree, ignore=ignore)
    # Offline and against this venv's setuptools: the declared floor must admit it.
    backend = tomllib.loads((ROOT / "pyproject.toml").read_text())["build-system"]["requires"]
    for requirement in map(Requirement, backend):
        assert requirement.specifier.contains(Version(setuptools.__version__)), requirement
    dist = tmp / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "--no-index", "-w", str(dist), str(source)],
        cwd=tmp,
    )  # fmt: skip
    (wheel,) = dist.glob("landfall-*.whl")
    return wheel


def _fresh_venv(tmp: Path) -> Path:
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = _run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp
    ).strip()
    borrowed = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(purelib, "project-packages.pth").write_text("\n".join(sorted(borrowed)) + "\n")
    return venv


def _events_to_decode() -> tuple[str, list[tuple[str, dict]]]:
    """Lines for the probe, and the records it must return: one per kept writer schema."""
    lines, expected = [], []
    codec = EventCodec()
    landed = new_event(
        EventType.DATA_LANDED, dataset="demo", partition="2026-11-01", batch_id="b",
        run_id="r", producer="test", path="raw/demo/2026-11-01", format="csv",
    )  # fmt: skip
    lines.append("avro " + codec.encode(EventType.DATA_LANDED, landed, topic="t").hex())
    expected.append((EventType.DATA_LANDED.value, landed))
    lines.append('json {"dataset": "demo", "partition": "2026-11-02", "format": "parquet"}')
    expected.append((EventType.DATA_LANDED.value, {"partition": "2026-11-02", "format": "parquet"}))
    # An event an earlier release wrote: only the history shipped in the wheel knows it.
    v1 = released_versions(EventType.DATA_LANDED)[0]
    parsed = fastavro.parse_schema(v1.raw)
    fp = fastavro.schema.fingerprint(
        fastavro.schema.to_parsing_canonical_form(parsed), "CRC-64-AVRO"
    )
    old = {f["name"]: None for f in v1.raw["fields"]} | {
        "dataset": "old",
        "partition": "2025-01-01",
    }
    body = BytesIO()
    fastavro.schemaless_writer(body, parsed, old)
    lines.append("avro c301" + fp + body.getvalue().hex())
    expected.append((EventType.DATA_LANDED.value, {**old, "model_version": None}))
    return "\n".join(lines) + "\n", expected


def test_the_wheel_runs_the_cli_and_decodes_with_its_own_schemas(tmp_path: Path) -> None:
    wheel = _build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    shipped = {
        n.removeprefix("landfall/schemas/") for n in names if n.startswith("landfall/schemas/")
    }
    assert shipped == {str(p.relative_to(SCHEMA_DIR)) for p in SCHEMA_DIR.rglob("*.avsc")}
    assert "landfall/demo/landfall.yaml" in names
    templates = {"base.html", "landfall.css", "login.html", "report.html", "status.html"}
    assert {f"landfall/templates/{name}" for name in templates} <= names
    assert "Requires-Dist: fastavro" in metadata

    venv = _fresh_venv(tmp_path)
    python = str(venv / "bin" / "python")
    _run(
        [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-deps",
         "--no-index", str(wheel)],
        cwd=tmp_path,
    )  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    usage = _run([str(venv / "bin" / "landfall"), "--help"], cwd=elsewhere)
    assert "Usage" in usage and "demo" in usage
    stdin, expected = _events_to_decode()
    probe = json.loads(_run([python, "-c", PROBE], cwd=elsewhere, stdin=stdin))

    installed = Path(probe["landfall"]).resolve().parent
    assert installed.is_relative_to(venv.resolve()), probe["landfall"]
    assert Path(probe["schema_dir"]).resolve() == installed / "schemas"
    assert probe["demo_datasets"] == ["demo"]
    # The pages render from the wheel's own templates, stylesheet included.
    assert "<form method='post' action='/login'>" in probe["login_page"]
    assert "font-family:system-ui" in probe["login_page"]
    assert len(probe["decoded"]) == len(expected)
    for (got_type, got), (want_type, want) in zip(probe["decoded"], expected, strict=True):
        assert got_type == want_type
        assert {k: got[k] for k in want} == json.loads(json.dumps(want, default=str))
