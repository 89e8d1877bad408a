"""pyproject.toml's runtime dependencies, requirements.in and requirements.lock agree.

pyproject declares compatible ranges (what an installed landfall accepts), the lock the
exact versions `make setup` installs: a range that excluded the locked version, or a
runtime package declared in one file and not the other, would ship a wheel nobody tested.
"""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def _declared() -> dict[str, Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    reqs = [Requirement(line) for line in project["dependencies"]]
    return {canonicalize_name(r.name): r for r in reqs}


def _runtime_block() -> dict[str, Requirement]:
    lines = (ROOT / "requirements.in").read_text(encoding="utf-8").splitlines()
    start = lines.index("# Runtime") + 1
    end = next(i for i, line in enumerate(lines) if line.startswith("# Tests"))
    reqs = [Requirement(line) for line in lines[start:end] if line and not line.startswith("#")]
    return {canonicalize_name(r.name): r for r in reqs}


def _locked() -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[canonicalize_name(Requirement(name).name)] = version.split(";")[0].strip()
    return pins


def test_pyproject_declares_exactly_the_runtime_block_of_requirements_in() -> None:
    declared, runtime = _declared(), _runtime_block()
    assert sorted(declared) == sorted(runtime)
    for name, req in runtime.items():
        assert declared[name].extras == req.extras, name


def test_every_declared_range_admits_the_locked_version() -> None:
    locked = _locked()
    for name, req in _declared().items():
        assert name in locked, f"{name} is declared in pyproject.toml but not in the lock"
        assert req.specifier.contains(locked[name]), f"{req} excludes the locked {locked[name]}"
        # A range with no ceiling would accept the next major release untested.
        assert any(spec.operator == "<" for spec in req.specifier), f"{req} has no upper bound"


def test_every_exact_pin_of_requirements_in_is_the_locked_version() -> None:
    locked = _locked()
    for name, req in _runtime_block().items():
        for spec in req.specifier:
            if spec.operator == "==":
                assert locked.get(name) == spec.version, f"{req} vs lock {locked.get(name)}"


def test_make_help_lists_every_phony_target() -> None:
    phony = next(
        line.split(":", 1)[1].split()
        for line in (ROOT / "Makefile").read_text(encoding="utf-8").splitlines()
        if line.startswith(".PHONY:")
    )
    done = subprocess.run(
        ["make", "--no-print-directory", "-C", str(ROOT), "help"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    listed = {line.split()[0] for line in done.stdout.splitlines() if line.strip()}
    assert set(phony) <= listed, f"targets without a `## comment`: {set(phony) - listed}"
    assert all(len(line.split(None, 1)) == 2 for line in done.stdout.splitlines() if line)
