"""A lake on HDFS, reached over WebHDFS: a pyarrow filesystem with atomic writes.

Spark reads and writes ``hdfs://namenode:port/path`` with the Hadoop client pyspark
bundles. Landfall's own files (manifests, commit pointers, reports) and the arrow
engine go through WebHDFS, the NameNode's REST interface, because pyarrow's own HDFS
filesystem needs libhdfs and a Hadoop installation on every host, and WebHDFS needs
nothing but HTTP. :func:`webhdfs_filesystem` wraps :class:`WebHdfsHandler` in a
``pyarrow.fs.PyFileSystem``, so the lake uses it like any other pyarrow filesystem.

Writes are atomic, as the lake's commit protocol needs: WebHDFS writes a file by a
CREATE on the DataNode and the file is visible, growing, while the data streams in.
So every file is written under a hidden temporary name beside its target
(``.<name>.<random>.tmp``) and renamed into place, a single NameNode operation:
replacing the target (``overwrite``) for an ordinary file, or refusing when it exists
(:meth:`WebHdfsHandler.create_new`, a commit pointer): two writers racing to create
the same pointer cannot both succeed.

Authentication is Hadoop's "simple" kind (the ``user.name`` parameter); a cluster
secured with Kerberos is not supported yet.
"""

from __future__ import annotations

import getpass
import io
import os
import posixpath
import tempfile
import uuid
from collections.abc import Iterator
from typing import IO, Any
from urllib.parse import quote

import pyarrow as pa
import requests
from pyarrow import fs as pafs

__all__ = [
    "DEFAULT_WEBHDFS_PORT",
    "WebHdfsError",
    "WebHdfsHandler",
    "default_user",
    "handler_of",
    "webhdfs_filesystem",
]

# The NameNode's HTTP port in Hadoop 3 (dfs.namenode.http-address); 50070 in Hadoop 2.
DEFAULT_WEBHDFS_PORT = 9870
# A small file is written from memory; a larger one (an arrow engine's output) from disk.
_SPOOL_BYTES = 16 * 1024 * 1024
_READ_BUFFER = 4 * 1024 * 1024
# WebHDFS's error names (RemoteException.exception) in Python's vocabulary.
_EXCEPTIONS: dict[str, type[OSError]] = {
    "FileNotFoundException": FileNotFoundError,
    "FileAlreadyExistsException": FileExistsError,
    "AccessControlException": PermissionError,
    "ParentNotDirectoryException": NotADirectoryError,
    "PathIsNotEmptyDirectoryException": OSError,
}


class WebHdfsError(OSError):
    """A WebHDFS call that failed for a reason other than a missing or existing path."""


def default_user() -> str:
    """The user Hadoop's own client acts as: ``$HADOOP_USER_NAME``, else the login name."""
    return os.environ.get("HADOOP_USER_NAME") or getpass.getuser()


class _Client:
    """The few WebHDFS operations the lake needs, on one NameNode."""

    def __init__(self, base_url: str, user: str, timeout_s: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.user = user
        self.timeout_s = timeout_s
        self._session = requests.Session()

    def _url(self, path: str) -> str:
        return f"{self.base_url}/webhdfs/v1{quote(path if path.startswith('/') else '/' + path)}"

    def call(
        self,
        method: str,
        op: str,
        path: str,
        *,
        redirect: bool = True,
        **params: str | int,
    ) -> requests.Response:
        query: dict[str, str | int] = {"op": op, "user.name": self.user, **params}
        try:
            response = self._session.request(
                method,
                self._url(path),
                params=query,
                allow_redirects=redirect,
                timeout=self.timeout_s,
            )
        except requests.RequestException as exc:
            raise ConnectionError(
                f"WebHDFS at {self.base_url} is unreachable ({op} {path}): {exc}"
            ) from None
        if response.status_code >= 400:
            raise _failure(response, op, path)
        return response

    def status(self, path: str) -> dict[str, Any] | None:
        try:
            found: dict[str, Any] = self.call("GET", "GETFILESTATUS", path).json()["FileStatus"]
        except FileNotFoundError:
            return None
        return found

    def listing(self, path: str) -> list[dict[str, Any]]:
        statuses = self.call("GET", "LISTSTATUS", path).json()["FileStatuses"]["FileStatus"]
        return list(statuses)

    def rename(self, source: str, target: str, *, overwrite: bool) -> None:
        self.call(
            "PUT",
            "RENAME",
            source,
            destination=target,
            # rename2: one NameNode operation that replaces the target, or fails if it exists.
            renameoptions="OVERWRITE" if overwrite else "NONE",
        )

    def delete(self, path: str, *, recursive: bool) -> bool:
        answer = self.call("DELETE", "DELETE", path, recursive="true" if recursive else "false")
        return bool(answer.json().get("boolean"))

    def create(self, path: str, data: IO[bytes] | bytes) -> None:
        """Create a file that must not exist, with its whole content, in two steps.

        The NameNode answers with the DataNode to send the data to (a redirect that
        must not be followed blindly: the body goes only to the DataNode).
        """
        where = self.call("PUT", "CREATE", path, redirect=False, overwrite="false")
        location = where.headers.get("Location")
        if where.status_code != 307 or not location:
            raise WebHdfsError(
                f"WebHDFS at {self.base_url} sent no DataNode for CREATE {path} "
                f"(HTTP {where.status_code})"
            )
        try:
            response = self._session.put(
                location,
                data=data,
                headers={"Content-Type": "application/octet-stream"},
                timeout=self.timeout_s,
            )
        except requests.RequestException as exc:
            raise ConnectionError(
                f"the DataNode WebHDFS at {self.base_url} sent for {path} is unreachable: {exc}"
            ) from None
        if response.status_code >= 400:
            raise _failure(response, "CREATE", path)

    def read(self, path: str, offset: int, length: int) -> bytes:
        return self.call("GET", "OPEN", path, offset=offset, length=length).content


def _failure(response: requests.Response, op: str, path: str) -> OSError:
    try:
        remote = response.json()["RemoteException"]
        name, message = str(remote.get("exception", "")), str(remote.get("message", ""))
    except (ValueError, KeyError, TypeError):
        name, message = "", response.text[:300]
    message = message.strip().splitlines()[0] if message.strip() else f"HTTP {response.status_code}"
    if response.status_code == 401 and not name:
        # SPNEGO asked for: the cluster is secured with Kerberos.
        return PermissionError(
            f"WebHDFS {op} {path}: the NameNode asks for Kerberos authentication, which "
            "landfall does not support yet (only Hadoop's simple authentication, hdfs.user)"
        )
    kind = _EXCEPTIONS.get(name, WebHdfsError)
    return kind(f"WebHDFS {op} {path}: {name or 'HTTP ' + str(response.status_code)}: {message}")


class _RangeReader(io.RawIOBase):
    """A seekable view of one HDFS file, read by ranges (OPEN with offset and length)."""

    def __init__(self, client: _Client, path: str, size: int) -> None:
        self._client, self._path, self._size, self._position = client, path, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._size}[whence]
        self._position = max(0, base + offset)
        return self._position

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        wanted = min(len(view), self._size - self._position)
        if wanted <= 0:
            return 0
        chunk = self._client.read(self._path, self._position, wanted)
        view[: len(chunk)] = chunk
        self._position += len(chunk)
        return len(chunk)


class _AtomicUpload(io.RawIOBase):
    """What an output stream writes, kept aside, then put in place whole when closed."""

    def __init__(self, handler: WebHdfsHandler, path: str) -> None:
        self._handler, self._path = handler, path
        self._spool = tempfile.SpooledTemporaryFile(max_size=_SPOOL_BYTES)

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        return self._spool.write(data)

    def close(self) -> None:
        if self.closed:
            return
        try:
            self._spool.seek(0)
            self._handler.put(self._path, self._spool, overwrite=True)
        finally:
            self._spool.close()
            super().close()


class WebHdfsHandler(pafs.FileSystemHandler):
    """pyarrow's filesystem interface over WebHDFS (paths are absolute HDFS paths)."""

    def __init__(self, base_url: str, user: str | None = None, timeout_s: float = 30.0) -> None:
        self.client = _Client(base_url, user or default_user(), timeout_s)

    # -- landfall's own operations
    def put(self, path: str, data: IO[bytes] | bytes, *, overwrite: bool) -> None:
        """Write ``path`` whole: a hidden temporary file, renamed into place.

        ``overwrite=False`` refuses, with FileExistsError, when ``path`` exists, and of
        two writers racing for it exactly one succeeds (the rename decides).
        """
        folder, name = posixpath.split(path)
        temporary = posixpath.join(folder, f".{name}.{uuid.uuid4().hex[:8]}.tmp")
        self.client.create(temporary, data)
        try:
            self.client.rename(temporary, path, overwrite=overwrite)
        except BaseException:
            self.client.delete(temporary, recursive=False)
            raise

    def create_new(self, path: str, data: bytes) -> None:
        """Create ``path`` with ``data`` atomically; FileExistsError if it exists already."""
        try:
            self.put(path, data, overwrite=False)
        except FileExistsError:
            raise FileExistsError(f"WebHDFS: {path} exists already") from None

    # -- pyarrow's FileSystemHandler
    def get_type_name(self) -> str:
        return "webhdfs"

    def equals(self, other: Any) -> bool:
        return isinstance(other, WebHdfsHandler) and (
            (other.client.base_url, other.client.user) == (self.client.base_url, self.client.user)
        )

    def normalize_path(self, path: str) -> str:
        return path

    def _info(self, path: str, status: dict[str, Any] | None) -> pafs.FileInfo:
        if status is None:
            return pafs.FileInfo(path, pafs.FileType.NotFound)
        if status.get("type") == "DIRECTORY":
            return pafs.FileInfo(path, pafs.FileType.Directory)
        return pafs.FileInfo(
            path,
            pafs.FileType.File,
            size=int(status.get("length", 0)),
            mtime_ns=int(status.get("modificationTime", 0)) * 1_000_000,
        )

    def get_file_info(self, paths: list[str]) -> list[pafs.FileInfo]:
        return [self._info(path, self.client.status(path)) for path in paths]

    def _walk(self, base: str, recursive: bool) -> Iterator[pafs.FileInfo]:
        for status in self.client.listing(base):
            path = f"{base.rstrip('/')}/{status['pathSuffix']}"
            info = self._info(path, status)
            yield info
            if recursive and info.type == pafs.FileType.Directory:
                yield from self._walk(path, recursive)

    def get_file_info_selector(self, selector: pafs.FileSelector) -> list[pafs.FileInfo]:
        base = selector.base_dir
        status = self.client.status(base)
        if status is None:
            if selector.allow_not_found:
                return []
            raise FileNotFoundError(f"WebHDFS: {base} does not exist")
        if status.get("type") != "DIRECTORY":
            raise NotADirectoryError(f"WebHDFS: {base} is not a directory")
        return list(self._walk(base, selector.recursive))

    def create_dir(self, path: str, recursive: bool) -> None:
        if not recursive and self.client.status(posixpath.dirname(path)) is None:
            raise FileNotFoundError(f"WebHDFS: the parent of {path} does not exist")
        self.client.call("PUT", "MKDIRS", path)

    def delete_dir(self, path: str) -> None:
        status = self.client.status(path)
        if status is None or status.get("type") != "DIRECTORY":
            raise FileNotFoundError(f"WebHDFS: no directory {path}")
        self.client.delete(path, recursive=True)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        if self.client.status(path) is None:
            if missing_dir_ok:
                return
            raise FileNotFoundError(f"WebHDFS: no directory {path}")
        for info in list(self._walk(path, recursive=False)):
            self.client.delete(info.path, recursive=True)

    def delete_root_dir_contents(self) -> None:
        raise PermissionError("landfall never empties a whole HDFS file system")

    def delete_file(self, path: str) -> None:
        status = self.client.status(path)
        if status is None or status.get("type") == "DIRECTORY":
            raise FileNotFoundError(f"WebHDFS: no file {path}")
        self.client.delete(path, recursive=False)

    def move(self, src: str, dest: str) -> None:
        self.client.rename(src, dest, overwrite=True)

    def copy_file(self, src: str, dest: str) -> None:
        with self.open_input_stream(src) as source:
            self.put(dest, source.read(), overwrite=True)

    def _reader(self, path: str) -> pa.PythonFile:
        status = self.client.status(path)
        if status is None:
            raise FileNotFoundError(f"WebHDFS: {path} does not exist")
        if status.get("type") == "DIRECTORY":
            raise IsADirectoryError(f"WebHDFS: {path} is a directory")
        raw = _RangeReader(self.client, path, int(status.get("length", 0)))
        return pa.PythonFile(io.BufferedReader(raw, _READ_BUFFER), mode="r")

    def open_input_stream(self, path: str) -> pa.PythonFile:
        return self._reader(path)

    def open_input_file(self, path: str) -> pa.PythonFile:
        return self._reader(path)

    def open_output_stream(self, path: str, metadata: dict[str, str] | None = None) -> Any:
        return pa.PythonFile(_AtomicUpload(self, path), mode="w")

    def open_append_stream(self, path: str, metadata: dict[str, str] | None = None) -> Any:
        raise NotImplementedError("landfall never appends to a file in the lake")


def webhdfs_filesystem(
    base_url: str, user: str | None = None, timeout_s: float = 30.0
) -> pafs.PyFileSystem:
    """A pyarrow filesystem on the HDFS whose NameNode serves WebHDFS at ``base_url``."""
    return pafs.PyFileSystem(WebHdfsHandler(base_url, user, timeout_s))


def handler_of(filesystem: pafs.FileSystem) -> WebHdfsHandler | None:
    """The WebHDFS handler behind a filesystem :func:`webhdfs_filesystem` made, else None."""
    if isinstance(filesystem, pafs.PyFileSystem) and isinstance(filesystem.handler, WebHdfsHandler):
        return filesystem.handler
    return None
