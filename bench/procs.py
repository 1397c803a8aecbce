"""Subprocesses for the benchmarks: start with logs to a file, wait for /healthz, stop for sure."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

REPO_ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
HEALTH_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
CLI_TIMEOUT_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started_at: float

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def cpu_seconds(proc: Proc) -> float | None:
    """User + system CPU seconds the process has used so far (Linux /proc); None once it is gone."""
    try:
        fields = Path(f"/proc/{proc.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """Share of one core a process used between ``__init__`` and ``share()``."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.cpu0 = cpu_seconds(proc)
        self.wall0 = time.monotonic()

    def share(self) -> float | None:
        cpu1, wall = cpu_seconds(self.proc), time.monotonic() - self.wall0
        if self.cpu0 is None or cpu1 is None or wall <= 0:
            return None
        return round((cpu1 - self.cpu0) / wall, 3)


def stat_fields(stat: Path) -> list[str]:
    """The fields of a /proc/PID/stat after the command name (which may hold spaces)."""
    return stat.read_text().rsplit(")", 1)[1].split()


def family_cpu_seconds(parent_pid: int) -> float | None:
    """User + system CPU seconds used so far by ``parent_pid`` and its running children (a database
    server's postmaster and its backends); None when the process is not on this machine."""
    ticks, found = 0, False
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat_fields(stat)
            if int(stat.parent.name) == parent_pid or int(fields[1]) == parent_pid:
                ticks += int(fields[11]) + int(fields[12])
                found = True
    return ticks / os.sysconf("SC_CLK_TCK") if found else None


class OwnCpuMeter:
    """Share of one core this process (the load generator) used between ``__init__`` and ``share()``."""

    def __init__(self) -> None:
        self.cpu0, self.wall0 = time.process_time(), time.monotonic()

    def share(self) -> float:
        return round((time.process_time() - self.cpu0) / (time.monotonic() - self.wall0), 3)


class CpuMeters:
    """Each group of processes' share of one core, summed, from ``__init__`` to ``shares()``; with
    ``server_pid``, a database server's (it and its children, summed) as ``database``; with ``client``,
    this process's own."""

    def __init__(
        self, groups: dict[str, Sequence[Proc]], server_pid: int | None = None, *, client: bool = False
    ) -> None:
        self.groups = {name: [CpuMeter(p) for p in members] for name, members in groups.items()}
        self.client = OwnCpuMeter() if client else None
        self.server_pid = server_pid
        self.server0 = None if server_pid is None else family_cpu_seconds(server_pid)
        self.wall0 = time.monotonic()

    def shares(self) -> dict[str, float | None]:
        found = {name: _summed(meters) for name, meters in self.groups.items()}
        if self.server_pid is not None:
            server1 = family_cpu_seconds(self.server_pid)
            wall = time.monotonic() - self.wall0
            found["database"] = (
                None if server1 is None or self.server0 is None else round((server1 - self.server0) / wall, 3)
            )
        if self.client is not None:
            found["client"] = self.client.share()
        return found


def _summed(meters: Sequence[CpuMeter]) -> float | None:
    shares = [m.share() for m in meters]
    return None if None in shares else round(sum(s or 0.0 for s in shares), 3)


def start(name: str, cmd: Sequence[str], env: dict[str, str], log_path: Path) -> Proc:
    """Start ``cmd`` from the repository root with stdout and stderr going to ``log_path``."""
    with log_path.open("ab") as out:
        started_at = time.time()
        popen = subprocess.Popen(
            list(cmd), env=env, cwd=REPO_ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    return Proc(name, popen, log_path, started_at)


def stop(proc: Proc, timeout_s: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM, wait up to ``timeout_s``, then SIGKILL. Returns the exit code."""
    if proc.popen.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.popen.send_signal(signal.SIGTERM)
        try:
            proc.popen.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log(f"{proc.name}: did not stop within {timeout_s:g}s after SIGTERM; killing it")
            proc.popen.kill()
            proc.popen.wait(5)
    return proc.popen.returncode


async def stop_async(proc: Proc, timeout_s: float = STOP_TIMEOUT_S) -> int:
    return await asyncio.to_thread(stop, proc, timeout_s)


async def wait_healthy(proc: Proc, base_url: str, timeout_s: float = HEALTH_TIMEOUT_S) -> None:
    """Poll ``GET /healthz`` until it answers 200; fail if the process exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    timeout = aiohttp.ClientTimeout(total=2)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode}:\n{proc.log_tail()}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(f"{base_url}/healthz") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.05)
    raise RuntimeError(f"{proc.name} was not healthy within {timeout_s:g}s:\n{proc.log_tail()}")


@contextlib.asynccontextmanager
async def running(
    name: str, cmd: Sequence[str], env: dict[str, str], log_path: Path, base_url: str | None
) -> AsyncIterator[Proc]:
    """Start a subprocess, wait for its /healthz when ``base_url`` is given, and always stop it."""
    proc = start(name, cmd, env, log_path)
    try:
        if base_url is not None:
            await wait_healthy(proc, base_url)
        yield proc
    finally:
        code = await stop_async(proc)
        if code not in (0, -signal.SIGTERM):
            log(f"{proc.name}: exited with {code}; last log lines:\n{proc.log_tail()}")


def run_cli(cmd: Sequence[str], env: dict[str, str], timeout_s: float = CLI_TIMEOUT_S) -> str:
    """Run a short command to completion and return its stdout; raise with stderr on failure."""
    done = subprocess.run(
        list(cmd), env=env, cwd=REPO_ROOT, capture_output=True, timeout=timeout_s, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    return done.stdout.decode()


def base_env() -> dict[str, str]:
    """The current environment with the repository importable (for ``-m bench.*`` modules)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    return env
