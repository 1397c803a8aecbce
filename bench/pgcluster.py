"""A throwaway PostgreSQL cluster for the benchmarks, made with the ``initdb`` and ``pg_ctl`` this machine
has, on a free port in a temporary directory: the PostgreSQL figures then need no running server, only
PostgreSQL's binaries. ``WEBHOOKD_BENCH_POSTGRES_DSN`` names a server to use instead."""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from bench import procs

SEARCHED = "/usr/lib/postgresql/*/bin"
"""Where Debian and Ubuntu keep each version's binaries off the PATH."""
SERVER_SETTINGS = (
    "listen_addresses=127.0.0.1",
    "max_connections=400",
    "shared_buffers=256MB",
    "shared_preload_libraries=pg_stat_statements",
)
"""Enough connections for eight workers' and several API nodes' pools, and pg_stat_statements for the
statements per delivered event; durability settings are PostgreSQL's defaults (fsync and
synchronous_commit on), as a user's server has them."""
RUN_AS = "postgres"
"""initdb refuses to run as root: as root, the cluster is made and run as this user."""


def binaries() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, newest version first; None when there is none."""
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(found).resolve().parent
    folders = sorted(Path("/").glob(SEARCHED.lstrip("/")), key=lambda p: _version(p.parent.name))
    for folder in reversed(folders):
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    return None


def _version(name: str) -> tuple[int, ...]:
    return tuple(int(part) for part in name.split(".") if part.isdigit())


def _as_owner(command: Sequence[str]) -> list[str]:
    return ["runuser", "-u", RUN_AS, "--", *command] if os.geteuid() == 0 else list(command)


@contextlib.contextmanager
def throwaway(tmp_parent: Path | None = None) -> Iterator[str]:
    """Start a cluster in a new temporary directory, yield its DSN, then stop it (fast) and delete it.

    The directory is made directly under ``tmp_parent`` (the system's temp by default), not inside the
    bench's own private folder, which the cluster's user could not reach as root."""
    folder = binaries()
    if folder is None:
        raise RuntimeError(
            "no initdb and pg_ctl found (on PATH or in /usr/lib/postgresql/*/bin): install PostgreSQL's"
            " server package, or set WEBHOOKD_BENCH_POSTGRES_DSN to a server to use"
        )
    data, port = Path(tempfile.mkdtemp(prefix="webhookd-bench-pg-", dir=tmp_parent)), procs.free_port()
    try:
        with _running(folder, data, port) as dsn:
            yield dsn
    finally:
        shutil.rmtree(data, ignore_errors=True)


@contextlib.contextmanager
def _running(folder: Path, data: Path, port: int) -> Iterator[str]:
    if os.geteuid() == 0:
        shutil.chown(data, RUN_AS)
    user = RUN_AS if os.geteuid() == 0 else getpass.getuser()
    initdb = [str(folder / "initdb"), "-D", str(data), "-U", user, "--auth=trust", "-E", "UTF8"]
    subprocess.run(_as_owner(initdb), check=True, capture_output=True)
    options = " ".join([f"-p {port}", f"-k {data}", *(f"-c {s}" for s in SERVER_SETTINGS)])
    pg_ctl = [str(folder / "pg_ctl"), "-D", str(data), "-l", str(data / "server.log"), "-w"]
    subprocess.run(_as_owner([*pg_ctl, "-o", options, "start"]), check=True, capture_output=True)
    procs.log(f"bench: throwaway PostgreSQL ({folder.parent.name}) on port {port} in {data}")
    try:
        # Its Unix socket, as a client on the same machine would connect: over TCP loopback the
        # kernel's TCP work for every statement is charged to the API node and the workers.
        yield f"postgresql://{user}@/postgres?host={data}&port={port}"
    finally:
        subprocess.run(_as_owner([*pg_ctl, "-m", "fast", "stop"]), check=False, capture_output=True)
