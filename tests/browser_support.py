"""Headless Chromium for the tests: a page's DOM, or a page driven like a user.

:func:`dump_dom` loads one URL and returns its DOM. :class:`DrivenChromium` talks the
DevTools protocol over Chromium's pipe (``--remote-debugging-pipe``: JSON messages
ended by NUL on file descriptors 3 and 4), so a test can fill and submit forms with
no extra package. The pages themselves run no script (the API's content security
policy allows none); DevTools' own evaluation is not subject to it.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

__all__ = ["DrivenChromium", "chromium", "dump_dom"]

_QUIET = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium() -> str:
    """Chromium's executable; the test is skipped without one."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("no chromium on PATH (make test installs Debian's chromium)")


def dump_dom(url: str, profile: Path) -> str:
    """The DOM of ``url`` once loaded, as headless Chromium serialises it."""
    result = subprocess.run(
        [chromium(), *_QUIET, f"--user-data-dir={profile}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def _above_nine(fd: int) -> int:
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


class DrivenChromium:
    """One headless Chromium tab, driven over the DevTools pipe; a context manager."""

    def __init__(self, profile: Path) -> None:
        commands_in, self._commands = os.pipe()
        self._replies, replies_out = os.pipe()
        # Bash (dash takes no fd over 9) puts the pipe ends where Chromium expects
        # them, 3 in and 4 out; moved above 9 first, so that placing one cannot
        # overwrite the other.
        commands_in, replies_out = (_above_nine(fd) for fd in (commands_in, replies_out))
        script = f'exec "$0" "$@" 3<&{commands_in} 4>&{replies_out}'
        self.process = subprocess.Popen(
            ["bash", "-c", script, chromium(), *_QUIET, f"--user-data-dir={profile}",
             "--remote-debugging-pipe", "about:blank"],
            pass_fds=(commands_in, replies_out),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        os.close(commands_in)
        os.close(replies_out)
        self._buffer = b""
        self._next_id = 0
        self._session: str | None = None

    def __enter__(self) -> DrivenChromium:
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self.call("Target.attachToTarget", targetId=target, flatten=True)[
            "sessionId"
        ]
        return self

    def __exit__(self, *_exc: object) -> None:
        try:
            self.call("Browser.close")
        except (OSError, RuntimeError):
            pass
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self._commands)
        os.close(self._replies)

    def call(self, method: str, timeout: float = 60, **params: Any) -> dict[str, Any]:
        """Send one command (to the tab, once attached) and return its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if self._session is not None and not method.startswith(("Target.", "Browser.")):
            message["sessionId"] = self._session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            reply = self._read(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result

    def _read(self, deadline: float) -> dict[str, Any]:
        """The next message from Chromium (a reply or an event); TimeoutError past deadline."""
        while b"\0" not in self._buffer:
            left = max(0.0, deadline - time.monotonic())
            ready, _, _ = select.select([self._replies], [], [], left)
            if not ready:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self._replies, 65536)
            if not chunk:
                self.process.kill()
                _, stderr = self.process.communicate(timeout=30)
                raise RuntimeError(f"Chromium closed its DevTools pipe: {stderr[-2000:]!r}")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        parsed: dict[str, Any] = json.loads(message)
        return parsed

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the tab (DevTools, not the page)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result.get("result", {}).get("value")

    def open(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for(self, expression: str, timeout: float = 60) -> Any:
        """Poll until ``expression`` is truthy in a loaded page; return its value.

        An element comes back as ``{}`` (it is not JSON): test ``!!element``.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(f"document.readyState === 'complete' && ({expression})")
            if value:
                return value
            time.sleep(0.2)
        where = self.evaluate("location.href + ': ' + document.body.innerText.slice(0, 500)")
        raise TimeoutError(f"{expression} did not hold within {timeout:g}s on {where}")

    def html(self) -> str:
        return str(self.evaluate("document.documentElement.outerHTML"))
