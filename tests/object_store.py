"""A real S3-compatible server for the tests: moto's server mode, in a process of its own.

``$LANDFALL_TEST_S3_ENDPOINT`` (with ``LANDFALL_TEST_S3_ACCESS_KEY_ID``,
``LANDFALL_TEST_S3_SECRET_ACCESS_KEY`` and optionally ``LANDFALL_TEST_S3_REGION``)
names an existing store instead (MinIO, AWS). moto checks credentials only when asked
to: the server here gets an IAM user with an access key allowed everything on S3, then
enforces authentication, so a wrong key or secret is refused as a real store would.
The fixtures (``s3_endpoint``, ``s3_bucket``) are in tests/conftest.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from landfall.config import ObjectStoreSettings
from landfall.ports import LOOPBACK, free_port

__all__ = ["S3Store", "configured_store", "moto_server", "new_bucket"]

_START_TIMEOUT_S = 90.0


@dataclass(frozen=True)
class S3Store:
    """Where the test store listens, and the credentials it accepts."""

    endpoint: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"

    def settings(self, **overrides: Any) -> ObjectStoreSettings:
        """landfall's object_store settings for this store (any field overridden)."""
        fields: dict[str, Any] = {
            "endpoint": self.endpoint,
            "region": self.region,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
        }
        return ObjectStoreSettings.model_validate({**fields, **overrides})

    def environ(self) -> dict[str, str]:
        """The same settings as ``LANDFALL_OBJECT_STORE__*`` variables (for load_settings)."""
        return {
            "LANDFALL_OBJECT_STORE__ENDPOINT": self.endpoint,
            "LANDFALL_OBJECT_STORE__REGION": self.region,
            "LANDFALL_OBJECT_STORE__ACCESS_KEY_ID": self.access_key_id,
            "LANDFALL_OBJECT_STORE__SECRET_ACCESS_KEY": self.secret_access_key,
        }

    def client(self, service: str = "s3") -> Any:
        """A boto3 client of this store, for what landfall itself never does (buckets)."""
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=self.region,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
        )


def configured_store() -> S3Store | None:
    """The store named by ``$LANDFALL_TEST_S3_ENDPOINT``, if any."""
    endpoint = os.environ.get("LANDFALL_TEST_S3_ENDPOINT")
    if not endpoint:
        return None
    return S3Store(
        endpoint=endpoint,
        access_key_id=os.environ.get("LANDFALL_TEST_S3_ACCESS_KEY_ID", ""),
        secret_access_key=os.environ.get("LANDFALL_TEST_S3_SECRET_ACCESS_KEY", ""),
        region=os.environ.get("LANDFALL_TEST_S3_REGION", "us-east-1"),
    )


def _answers(endpoint: str) -> bool:
    try:
        with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2):
            return True
    except OSError:
        return False


@contextmanager
def moto_server() -> Iterator[S3Store]:
    """moto's S3 server on a free loopback port, enforcing its one user's credentials."""
    # Long: start a server process, wait for it, stop it.
    import boto3

    port = free_port()
    endpoint = f"http://{LOOPBACK}:{port}"
    log = Path(tempfile.mkstemp(prefix="landfall-moto-", suffix=".log")[1])
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", LOOPBACK, "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            # Its own working directory: moto must not find files of the checkout.
            cwd=tempfile.gettempdir(),
        )
    try:
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not _answers(endpoint):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"moto's server did not start on {endpoint}: "
                    f"{log.read_text(errors='replace')[-2000:]}"
                )
            time.sleep(0.2)
        # Until authentication is enforced any key works: make the user and its key.
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="setup",
            aws_secret_access_key="setup",
        )
        iam.create_user(UserName="landfall")
        iam.put_user_policy(
            UserName="landfall",
            PolicyName="lake",
            PolicyDocument=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
                }
            ),
        )
        key = iam.create_access_key(UserName="landfall")["AccessKey"]
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=b"0",  # requests without a valid signature allowed from now on
            headers={"Content-Type": "text/plain"},  # not a form: moto reads the raw body
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10):
            pass
        yield S3Store(endpoint, key["AccessKeyId"], key["SecretAccessKey"])
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        log.unlink(missing_ok=True)


def new_bucket(store: S3Store, prefix: str = "landfall") -> str:
    """A new, empty bucket on ``store``; its name."""
    name = f"{prefix}-{uuid.uuid4().hex[:12]}"
    store.client().create_bucket(Bucket=name)
    return name
