"""Reaching the lake's store: a local folder, an S3-compatible object store or HDFS.

The lake root is a local path (or ``file://``), ``s3a://bucket/prefix`` or
``hdfs://namenode:port/path``. On HDFS, Spark uses the Hadoop client pyspark bundles
and landfall the NameNode's WebHDFS (:mod:`landfall.webhdfs`, the ``hdfs`` settings).
On an object store, Spark
reaches an object store through hadoop-aws's ``s3a`` connector (its jars fetched by
``make spark-jars`` into ``.deps/spark-jars``), the arrow engine and landfall's own
small reads and writes through pyarrow's S3 filesystem; both from the one
``object_store`` section of the settings, so they always see the same store:

- :func:`arrow_filesystem`: the pyarrow filesystem of a lake root and the root's path
  within it;
- :func:`lake_spark_conf`: the Spark conf a session needs for a lake root (nothing for
  a local one), i.e. :func:`spark_conf` (the ``fs.s3a.*`` settings and the jars);
- :func:`check_reachable`: one clear error, naming the setting to fix, when the store
  cannot be reached, refuses the credentials, has no such bucket, or the root is a file;
- :func:`store_failure`: any pyarrow error of the store in landfall's vocabulary.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from pyarrow import fs as pafs

from landfall.config import HdfsSettings, ObjectStoreSettings
from landfall.errors import ConfigError, LandfallError, RetryableError, StageFailedError

__all__ = [
    "S3A_JARS_ENV",
    "S3_SCHEMES",
    "StoreSettings",
    "arrow_filesystem",
    "check_reachable",
    "is_hdfs",
    "is_object_store",
    "lake_spark_conf",
    "lake_store_settings",
    "s3a_jars",
    "spark_conf",
    "store_failure",
]

# What the arrow side needs to reach a lake that is not local (shipped to Spark tasks).
StoreSettings = ObjectStoreSettings | HdfsSettings

# URI schemes of an S3-compatible store; Spark reads each of them with the s3a connector.
S3_SCHEMES = ("s3a", "s3", "s3n")
S3A_JARS_ENV = "LANDFALL_S3A_JARS"
_DEFAULT_JARS = Path(__file__).resolve().parent.parent / ".deps" / "spark-jars"
_S3A_FILESYSTEM = "org.apache.hadoop.fs.s3a.S3AFileSystem"
# hadoop-aws 3.4+ (AWS SDK v2) providers: fixed keys, and keys with an STS session token.
_KEYS_PROVIDER = "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
_SESSION_PROVIDER = "org.apache.hadoop.fs.s3a.TemporaryAWSCredentialsProvider"
_S3A_MIN_TIMEOUT_MS = 15_000
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$")


def _split(uri_root: str) -> tuple[str | None, str]:
    match = _URI.match(uri_root)
    if match is None:
        return None, uri_root
    return match.group(1).lower(), match.group(2)


def is_object_store(uri_root: str) -> bool:
    """Whether a lake root lives on an S3-compatible object store (``s3a://`` ...)."""
    return _split(uri_root)[0] in S3_SCHEMES


def lake_store_settings(
    uri_root: str, store: ObjectStoreSettings, hdfs: HdfsSettings
) -> StoreSettings | None:
    """The settings the arrow side needs for the lake at ``uri_root``: None if local."""
    if is_object_store(uri_root):
        return store
    return hdfs if is_hdfs(uri_root) else None


def is_hdfs(uri_root: str) -> bool:
    """Whether a lake root lives on HDFS (``hdfs://namenode:port/path``)."""
    return _split(uri_root)[0] == "hdfs"


def arrow_filesystem(
    uri_root: str, settings: ObjectStoreSettings, hdfs: HdfsSettings | None = None
) -> tuple[pafs.FileSystem, str]:
    """The pyarrow filesystem holding ``uri_root``, and the root's path within it.

    ``s3a://bucket/prefix`` (or ``s3://``) gives an ``S3FileSystem`` on the configured
    store and ``bucket/prefix``; ``hdfs://namenode:port/path`` a WebHDFS filesystem
    (``hdfs`` settings, :mod:`landfall.webhdfs`) and ``/path``; a plain path or
    ``file:///abs`` a ``LocalFileSystem`` and the absolute path. Nothing is contacted
    yet: :func:`check_reachable` does.
    """
    scheme, rest = _split(uri_root)
    if scheme is None:
        return pafs.LocalFileSystem(), str(Path(uri_root).expanduser().absolute())
    if scheme == "file":
        host, _, path = rest.partition("/")
        if host not in ("", "localhost"):
            raise ConfigError(
                f"lake_root {uri_root!r} names host {host!r}: a file:// lake is on this "
                "machine (file:///absolute/path)"
            )
        return pafs.LocalFileSystem(), "/" + path.lstrip("/")
    if scheme in S3_SCHEMES:
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ConfigError(f"lake_root {uri_root!r} names no bucket ({scheme}://bucket/prefix)")
        root = f"{bucket}/{prefix.strip('/')}".rstrip("/")
        return _s3_filesystem(settings), root
    if scheme == "hdfs":
        return _hdfs_filesystem(uri_root, rest, hdfs or HdfsSettings())
    raise ConfigError(
        f"lake_root {uri_root!r}: the scheme {scheme}:// is not supported "
        "(use a local path, file:///path, s3a://bucket/prefix or hdfs://namenode:port/path)"
    )


def _hdfs_filesystem(uri_root: str, rest: str, hdfs: HdfsSettings) -> tuple[pafs.FileSystem, str]:
    from landfall.webhdfs import DEFAULT_WEBHDFS_PORT, webhdfs_filesystem

    authority, _, path = rest.partition("/")
    try:
        host = urlsplit(f"hdfs://{authority}").hostname
    except ValueError:
        host = None
    if not host:
        raise ConfigError(f"lake_root {uri_root!r} names no NameNode (hdfs://namenode:port/path)")
    if not path.strip("/"):
        raise ConfigError(
            f"lake_root {uri_root!r} names no folder: the lake is a folder of the file "
            "system (hdfs://namenode:port/path), never its root"
        )
    # The NameNode's HTTP server is on the same host as its RPC port, by default.
    webhdfs = hdfs.webhdfs or f"http://{host}:{DEFAULT_WEBHDFS_PORT}"
    filesystem = webhdfs_filesystem(webhdfs, hdfs.user, hdfs.timeout_s)
    return filesystem, "/" + path.strip("/")


def _clear(value: object) -> str | None:
    secret = getattr(value, "get_secret_value", None)
    plain = secret() if secret is not None else value
    return plain if isinstance(plain, str) and plain else None


def _s3_filesystem(settings: ObjectStoreSettings) -> pafs.S3FileSystem:
    endpoint = urlsplit(settings.endpoint) if settings.endpoint else None
    return pafs.S3FileSystem(
        access_key=_clear(settings.access_key_id),
        secret_key=_clear(settings.secret_access_key),
        session_token=_clear(settings.session_token),
        region=settings.region,
        endpoint_override=endpoint.netloc if endpoint else None,
        scheme=endpoint.scheme if endpoint else "https",
        # pyarrow addresses buckets by path whenever an endpoint is given, unless forced.
        force_virtual_addressing=endpoint is not None and not settings.path_style_access,
        connect_timeout=settings.connect_timeout_s,
        # A small object (a manifest, a pointer, a report) is then written by one PUT
        # when the stream closes, instead of a multipart upload of one part.
        allow_delayed_open=True,
    )


def s3a_jars() -> list[Path]:
    """The s3a connector's jars (hadoop-aws and the AWS SDK bundle), for the class path.

    From ``$LANDFALL_S3A_JARS`` or ``.deps/spark-jars`` (``make spark-jars`` fills it).
    """
    folder = Path(os.environ.get(S3A_JARS_ENV) or _DEFAULT_JARS)
    jars = sorted(folder.glob("*.jar"))
    if not any(jar.name.startswith("hadoop-aws-") for jar in jars):
        raise ConfigError(
            f"a lake on an object store needs Spark's s3a connector, whose jars are not in "
            f"{folder}: run `make spark-jars` (it fetches them with Maven) or set "
            f"{S3A_JARS_ENV} to a folder holding them"
        )
    return jars


def spark_conf(settings: ObjectStoreSettings, jars: Sequence[Path] | None = None) -> dict[str, str]:
    """Spark's conf for ``s3a://`` on the configured store, the connector's jars included.

    The jars go on the driver's and executors' class path (``extraClassPath``) rather
    than in ``spark.jars``: Spark copies every ``spark.jars`` file into each
    application's own folder (the SDK bundle is 650 MB; a killed process leaves its copy
    behind), while a class path entry is read where it lies. So every Spark worker needs
    the jars at the same path as the service, as it needs the service's Python.

    ``jars`` defaults to :func:`s3a_jars`. The values include the keys in clear, for
    the session only: never log this mapping (Spark's own UI redacts them).
    """
    hadoop = {
        "fs.s3a.impl": _S3A_FILESYSTEM,
        # s3:// and s3n:// lake roots are read by the same connector.
        "fs.s3.impl": _S3A_FILESYSTEM,
        "fs.s3n.impl": _S3A_FILESYSTEM,
        "fs.s3a.endpoint.region": settings.region,
        "fs.s3a.path.style.access": "true" if settings.path_style_access else "false",
        # In milliseconds; hadoop-aws raises anything under 15 s to 15 s, with a warning.
        "fs.s3a.connection.establish.timeout": str(
            max(_S3A_MIN_TIMEOUT_MS, int(settings.connect_timeout_s * 1000))
        ),
    }
    if settings.endpoint:
        hadoop["fs.s3a.endpoint"] = settings.endpoint
        secure = urlsplit(settings.endpoint).scheme == "https"
        hadoop["fs.s3a.connection.ssl.enabled"] = "true" if secure else "false"
    key_id, secret = _clear(settings.access_key_id), _clear(settings.secret_access_key)
    if key_id and secret:
        hadoop["fs.s3a.access.key"] = key_id
        hadoop["fs.s3a.secret.key"] = secret
        token = _clear(settings.session_token)
        if token:
            hadoop["fs.s3a.session.token"] = token
        hadoop["fs.s3a.aws.credentials.provider"] = _SESSION_PROVIDER if token else _KEYS_PROVIDER
    conf = {f"spark.hadoop.{key}": value for key, value in hadoop.items()}
    class_path = os.pathsep.join(str(jar) for jar in (s3a_jars() if jars is None else jars))
    conf["spark.driver.extraClassPath"] = class_path
    conf["spark.executor.extraClassPath"] = class_path
    return conf


def lake_spark_conf(
    uri_root: str, settings: ObjectStoreSettings, hdfs: HdfsSettings | None = None
) -> dict[str, str]:
    """The Spark conf a session needs for the lake at ``uri_root``: none for a local one.

    On HDFS, Spark's own Hadoop client needs nothing but the user, when ``hdfs.user``
    names one: Hadoop reads ``HADOOP_USER_NAME`` from the driver's system properties,
    and executors act as the driver's user.
    """
    if is_object_store(uri_root):
        return spark_conf(settings)
    if is_hdfs(uri_root) and hdfs is not None and hdfs.user:
        return {"spark.driver.extraJavaOptions": f"-DHADOOP_USER_NAME={hdfs.user}"}
    return {}


# What pyarrow's S3 errors say (the AWS SDK's error names, curl's for connections).
_UNREACHABLE = (
    "NETWORK_CONNECTION",
    "curlCode",
    "Could not resolve",
    "Couldn't resolve",
    "Connection refused",
    "Connection reset",
    "Timeout",
    "timed out",
    "SERVICE_UNAVAILABLE",
    "SLOW_DOWN",
    "INTERNAL_FAILURE",
    "REQUEST_TIME_TOO_SKEWED",
)
_REFUSED = (
    "ACCESS_DENIED",
    "INVALID_ACCESS_KEY_ID",
    "SIGNATURE_DOES_NOT_MATCH",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "UNRECOGNIZED_CLIENT",
    "INVALID_CLIENT_TOKEN_ID",
    "EXPIRED_TOKEN",
    "AccessDenied",
)
_NO_BUCKET = ("NO_SUCH_BUCKET", "NoSuchBucket")


def _where(settings: ObjectStoreSettings | None) -> str:
    if settings is None or not settings.endpoint:
        return "the object store (object_store.endpoint unset: AWS S3)"
    return f"the object store at {settings.endpoint} (object_store.endpoint)"


def store_failure(
    exc: BaseException, uri: str, settings: ObjectStoreSettings | None = None
) -> LandfallError | None:
    """A failed store call in landfall's vocabulary; None if ``exc`` is no store error.

    An unreachable or overloaded store is a :class:`RetryableError` (it may come back);
    refused credentials and a missing bucket are a :class:`StageFailedError` that names
    the settings to fix.
    """
    if not isinstance(exc, OSError):
        return None
    text = str(exc)
    if is_hdfs(uri):
        return _hdfs_failure(exc, uri)
    if any(marker in text for marker in _REFUSED):
        return StageFailedError(
            f"{_where(settings)} refused the credentials for lake_root {uri} (check "
            f"object_store.access_key_id and object_store.secret_access_key, and that they "
            f"may use the bucket): {_first_line(text)}"
        )
    if any(marker in text for marker in _NO_BUCKET):
        return StageFailedError(
            f"the bucket of lake_root {uri} does not exist on {_where(settings)}: create it "
            f"or fix lake_root"
        )
    if any(marker in text for marker in _UNREACHABLE):
        return RetryableError(
            f"{_where(settings)} is unreachable for lake_root {uri}: {_first_line(text)}"
        )
    return None


def _hdfs_failure(exc: OSError, uri: str) -> LandfallError | None:
    # landfall.webhdfs raises ConnectionError for a NameNode or DataNode it cannot reach
    # and PermissionError for HDFS's AccessControlException.
    if isinstance(exc, ConnectionError):
        return RetryableError(
            f"HDFS is unreachable for lake_root {uri} (check hdfs.webhdfs, the NameNode's "
            f"HTTP address): {_first_line(str(exc))}"
        )
    if isinstance(exc, PermissionError):
        return StageFailedError(
            f"HDFS refused access to lake_root {uri} (check hdfs.user and the folder's "
            f"permissions): {_first_line(str(exc))}"
        )
    return None


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else text
    return line if len(line) <= 400 else line[:399] + "…"


def check_reachable(
    filesystem: pafs.FileSystem,
    root: str,
    uri: str | None = None,
    settings: ObjectStoreSettings | None = None,
) -> None:
    """Fail with one clear error unless the lake root can be used.

    ``filesystem`` and ``root`` are what :func:`arrow_filesystem` returned for ``uri``
    (the configured lake_root, for messages). The root may be absent (the lake is made
    on first write), but on an object store its bucket must exist, and the root must not
    be a file. Raises :class:`RetryableError` when the store cannot be reached, else
    :class:`StageFailedError` naming the setting to fix.
    """
    uri = uri or root
    is_s3 = isinstance(filesystem, pafs.S3FileSystem)
    try:
        if is_s3:
            bucket = root.split("/", 1)[0]
            if filesystem.get_file_info(bucket).type == pafs.FileType.NotFound:
                raise StageFailedError(
                    f"the bucket {bucket!r} of lake_root {uri} does not exist on "
                    f"{_where(settings)}: create it or fix lake_root"
                )
        info = filesystem.get_file_info(root)
    except OSError as exc:
        failure = store_failure(exc, uri, settings) if is_s3 or is_hdfs(uri) else None
        if failure is not None:
            raise failure from None
        raise StageFailedError(f"cannot read lake_root {uri}: {_first_line(str(exc))}") from None
    if info.type == pafs.FileType.File:
        raise StageFailedError(f"lake_root {uri} is a file, not a folder: fix lake_root")
