"""A service started against a schema registry without landfall's schemas stops at once.

The registry is confluent-kafka's in-memory one (``mock://``), empty in the service's
own process, as a real one is before a deploy ran ``landfall schemas register``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

from landfall.ports import free_port


def test_a_service_without_its_registered_schemas_says_what_to_run(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    name = f"unregistered-{uuid.uuid4().hex[:8]}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LANDFALL_")}
    env.update(
        LANDFALL_HOME=str(tmp_path),
        LANDFALL_KAFKA_BOOTSTRAP=kafka_bootstrap,
        LANDFALL_KAFKA_GROUP_PREFIX=name,
        LANDFALL_KAFKA__SCHEMA_REGISTRY_URL=f"mock://{name}",
        LANDFALL_TELEMETRY__METRICS_PORT=str(free_port()),
    )
    for key in ("landed", "validated", "featurized", "predicted", "reported", "failed",
                "dead_letter"):  # fmt: skip
        env[f"LANDFALL_KAFKA__TOPICS__{key.upper()}__NAME"] = f"{name}.{key}"
    done = subprocess.run(
        [sys.executable, "-m", "landfall", "serve", "validator"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert "lacks 6 of landfall's event schemas" in errors[0]
    assert f"DataLanded under '{name}.landed-value'" in errors[0]
    assert "run `landfall schemas register`" in errors[0]
