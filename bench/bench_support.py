"""What the benchmarks share: the peak memory of a process tree, and running one way apart.

Each benchmark runs its contenders in their own processes so that each one's memory is
its own; :class:`TreeMemory` samples a process and all its descendants (a service, its
Spark JVM and that JVM's Python workers) and keeps the peak.
"""

from __future__ import annotations

import ctypes
import json
import os
import platform
import subprocess
import threading
import time
from collections.abc import Iterable
from typing import Any

__all__ = [
    "RESULT",
    "TreeMemory",
    "load_registered_model",
    "print_result",
    "process_tree",
    "run_child",
    "tree_rss_kib",
]

# A child prints its result as one line starting with this, after anything else it says.
RESULT = "BENCH-RESULT "

try:  # psutil reads the same counters; /proc is the fallback where it is not installed
    import psutil
except ImportError:  # pragma: no cover - depends on the environment
    psutil = None  # type: ignore[assignment]


def _proc_children() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                # The command name may hold spaces and parentheses: split after the last ")".
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry))
    return children


def process_tree(root: int) -> list[int]:
    """``root`` and every process descended from it (gone processes are skipped)."""
    if psutil is not None:
        try:
            top = psutil.Process(root)
            return [root, *(p.pid for p in top.children(recursive=True))]
        except psutil.Error:
            return []
    children = _proc_children()
    found, pending = [], [root]
    while pending:
        pid = pending.pop()
        found.append(pid)
        pending.extend(children.get(pid, []))
    return found


def _rss_kib(pid: int) -> tuple[int, int]:
    """Resident and high-water resident memory of one process, in KiB."""
    rss = hwm = 0
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1])
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        if psutil is not None:
            try:
                rss = hwm = psutil.Process(pid).memory_info().rss // 1024
            except psutil.Error:
                pass
    return rss, hwm


def tree_rss_kib(root: int) -> int:
    """The summed resident memory of a process tree now, in KiB."""
    return sum(_rss_kib(pid)[0] for pid in _own_memory(process_tree(root)))


# kcmp(2) tells whether two processes share one address space; its number by machine.
_KCMP = {"x86_64": 312, "aarch64": 272}.get(platform.machine())
_KCMP_VM = 1
_LIBC = ctypes.CDLL(None, use_errno=True) if _KCMP is not None else None


def _parent(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return int(handle.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def _own_memory(pids: list[int]) -> list[int]:
    """``pids`` without the children that share their parent's address space.

    A JVM starts commands (Hadoop's local filesystem runs ``chmod`` for every file it
    writes) with posix_spawn, whose child runs in the JVM's own memory until it execs:
    for that moment /proc shows the child with the whole JVM's RSS. Counted as a
    process of its own, it doubles a JVM of 1.2 GiB into a 2.4 GiB "peak".
    """
    if _LIBC is None:
        return pids
    own = []
    for pid in pids:
        parent = _parent(pid)
        shared = parent > 0 and _LIBC.syscall(_KCMP, pid, parent, _KCMP_VM, 0, 0) == 0
        if not shared:
            own.append(pid)
    return own


class TreeMemory:
    """Samples the summed RSS of each watched process tree every ``interval`` s; keeps peaks.

    RSS, not PSS: reading PSS (smaps) walks page tables under the process's memory
    lock and slowed the JVM it measured by a third. Pages shared between forked Python
    workers are counted once per worker, so the Spark figures lean high.
    ``reset()`` starts a new window (e.g. one batch) without stopping the sampling.
    """

    def __init__(self, roots: dict[str, int] | int, interval: float = 0.1) -> None:
        self.roots = roots if isinstance(roots, dict) else {"": roots}
        self.interval = interval
        self.peaks_kib: dict[str, int] = dict.fromkeys(self.roots, 0)
        self.peak_processes: dict[str, int] = dict.fromkeys(self.roots, 0)
        self.high_water_kib: dict[int, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="tree-memory", daemon=True)
        self._thread.start()

    @property
    def peak_kib(self) -> int:
        """The peak of the single watched tree (or the largest of several)."""
        return max(self.peaks_kib.values(), default=0)

    def _sample(self) -> None:
        while not self._stop.is_set():
            for name, root in self.roots.items():
                pids = _own_memory(process_tree(root))
                total = 0
                for pid in pids:
                    rss, hwm = _rss_kib(pid)
                    total += rss
                    self.high_water_kib[pid] = max(self.high_water_kib.get(pid, 0), hwm)
                with self._lock:
                    if total > self.peaks_kib[name]:
                        self.peaks_kib[name], self.peak_processes[name] = total, len(pids)
            self._stop.wait(self.interval)

    def reset(self) -> dict[str, int]:
        """The peaks of the window now ending (KiB by tree); a new window starts."""
        with self._lock:
            ended = dict(self.peaks_kib)
            self.peaks_kib = dict.fromkeys(self.roots, 0)
        return ended

    def stop(self) -> None:
        """Stop sampling."""
        self._stop.set()
        self._thread.join()


def load_registered_model(settings: Any, dataset: str) -> tuple[Any, Any, tuple[Any, Any]]:
    """The version the dataset's model alias names now, its scorer plan, the loaded model.

    What the predictor resolves and loads for a batch, so a baseline scores with the
    same version and the same per-batch code (``services.predictor.scorer``).
    """
    from landfall.registry import configure_mlflow, resolve_model_version
    from services.predictor.scorer import load_for_scoring, plan_scorer

    configure_mlflow(settings)
    version = resolve_model_version(settings, settings.dataset(dataset).model)
    model, raw = load_for_scoring(version.uri)
    return version, plan_scorer(model, []), (model, raw)


def run_child(
    command: Iterable[str], what: str, *, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """Run one contender in its own process; its printed result plus its tree's peak memory.

    Raises RuntimeError with the end of its stderr if it fails.
    """
    started = time.perf_counter()
    process = subprocess.Popen(
        list(command),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    memory = TreeMemory(process.pid)
    stdout, stderr = process.communicate()
    memory.stop()
    if process.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {process.returncode}):\n{stderr[-4000:]}")
    lines = [line for line in stdout.splitlines() if line.startswith(RESULT)]
    if not lines:
        raise RuntimeError(f"{what} printed no result:\n{stdout[-2000:]}\n{stderr[-2000:]}")
    result: dict[str, Any] = json.loads(lines[-1][len(RESULT) :])
    result.update(
        peak_mib=memory.peak_kib / 1024,
        peak_processes=memory.peak_processes[""],
        process_seconds=time.perf_counter() - started,
    )
    return result


def print_result(result: dict[str, Any]) -> None:
    """How a child hands its result to :func:`run_child`."""
    print(RESULT + json.dumps(result), flush=True)
