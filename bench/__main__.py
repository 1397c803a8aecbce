"""``python -m bench``: run the webhookd benchmarks, print a table, write bench/results/<time>.json."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    claims,
    dashboard,
    delivery,
    fairness,
    ingest,
    latency,
    paging,
    pgcluster,
    postgres,
    procs,
    report,
)
from bench.config import BenchConfig

BENCHMARKS: dict[str, Callable[[BenchConfig, Path], Awaitable[dict[str, Any]]]] = {
    "ingest": ingest.run,
    "delivery": delivery.run,
    "latency": latency.run,
    "postgres": postgres.run,
    "paging": paging.run,
    "fairness": fairness.run,
    "claims": claims.run,
    "dashboard": dashboard.run,
}
DEFAULT_OUT = procs.REPO_ROOT / "bench" / "results"
BUSY_LOADAVG = 0.5


def client_loop_name() -> str:
    """The load generator runs on uvloop when it is installed (it comes with uvicorn[standard]):
    on the stock asyncio loop the aiohttp client, not the raw baseline server, sets the ceiling."""
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def run_in_loop(main: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    if client_loop_name() == "uvloop":
        import uvloop

        result: dict[str, Any] = uvloop.run(main)
        return result
    return asyncio.run(main)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark webhookd against raw baselines measured in the same run: (a) ingest "
        "throughput, (b) backlog delivery, (c) end-to-end latency, (d) PostgreSQL publishing with 1 and 2 "
        "API nodes and delivery with 1 and 2 worker processes, (e) one customer's publishes while another "
        "runs deep page= listings, (f) one customer's delivery latency beside another's slow backlog, (g) "
        "one claim's cost against a small and a big backlog on SQLite and PostgreSQL, (h) each dashboard "
        "page's time with 100,000 deliveries in the store. All traffic stays on 127.0.0.1.",
    )
    parser.add_argument("--quick", action="store_true", help="shorter run: 3 s loads, 5,000-event backlog")
    parser.add_argument(
        "--only",
        choices=sorted(BENCHMARKS),
        action="append",
        help="run only this benchmark (repeatable); default: all",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results directory [bench/results]")
    parser.add_argument("--tmp-dir", type=Path, help="parent of the temporary database dirs [system temp]")
    parser.add_argument(
        "--workers",
        type=_counts,
        default=(1, 2),
        metavar="N,N,...",
        help="postgres: the worker-process counts to drain with, e.g. 1,2,4,8 [1,2]",
    )
    parser.add_argument(
        "--receivers",
        type=_positive,
        default=1,
        metavar="N",
        help="postgres: receiver processes sharing one port (SO_REUSEPORT), so one is not the ceiling [1]",
    )
    parser.add_argument(
        "--api-nodes",
        type=_counts,
        default=(1, 2),
        metavar="N,N,...",
        help="postgres: the counts of API nodes (serve --no-workers) to publish through, e.g. 1,2,4 [1,2]",
    )
    return parser


def _counts(raw: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in raw.split(","))
    except ValueError:
        counts = ()
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"{raw!r}: give whole numbers of at least 1, comma-separated")
    return counts


def _positive(raw: str) -> int:
    if not raw.isdigit() or int(raw) < 1:
        raise argparse.ArgumentTypeError(f"{raw!r}: give a whole number of at least 1")
    return int(raw)


def _needs_postgres(names: Sequence[str], cfg: BenchConfig) -> bool:
    return bool({"postgres", "claims"} & set(names)) or (
        "dashboard" in names and "postgres" in cfg.dashboard_stores
    )


@contextlib.contextmanager
def _postgres_dsn(names: Sequence[str], cfg: BenchConfig) -> Iterator[str]:
    """The given server, a throwaway cluster for this run, or none when no benchmark needs one."""
    if os.environ.get(postgres.DSN_ENV) or not _needs_postgres(names, cfg):
        yield os.environ.get(postgres.DSN_ENV, "")
        return
    with pgcluster.throwaway(cfg.tmp_parent) as dsn:
        yield dsn


async def run_all(cfg: BenchConfig, names: Sequence[str], tmp_root: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in names:
        procs.log(f"{name}: starting")
        began = time.monotonic()
        workdir = tmp_root / name
        workdir.mkdir()
        results[name] = await BENCHMARKS[name](cfg, workdir)
        results[name]["wall_s"] = round(time.monotonic() - began, 1)
    return results


def _warn_if_busy(loadavg: list[float] | None) -> None:
    if loadavg and loadavg[0] > BUSY_LOADAVG:
        procs.log(
            f"bench: warning: 1-minute load average is {loadavg[0]:.2f} before starting; other work on"
            " this machine will skew the figures"
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = [n for n in BENCHMARKS if n in (args.only or BENCHMARKS)]
    cfg = BenchConfig.standard(args.quick, args.tmp_dir)
    started = datetime.now(UTC)
    with (
        _postgres_dsn(names, cfg) as dsn,
        tempfile.TemporaryDirectory(prefix="webhookd-bench-", dir=args.tmp_dir) as tmp,
    ):
        cfg = dataclasses.replace(
            cfg,
            postgres_workers=args.workers,
            postgres_receivers=args.receivers,
            postgres_api_nodes=args.api_nodes,
            postgres_dsn=dsn,
        )
        machine = {**report.machine(Path(tmp)), "load_generator_loop": client_loop_name()}
        mode = "quick" if args.quick else "full"
        procs.log(f"bench: {', '.join(names)} ({mode}, client on {client_loop_name()}) in {tmp}")
        _warn_if_busy(machine["loadavg_at_start"])
        results = run_in_loop(run_all(cfg, names, Path(tmp)))
        machine["loadavg_at_end"] = report.load_average()
    lines = report.table(results)
    print("\n".join(lines))
    stamp = started.strftime("%Y%m%dT%H%M%SZ")
    record = {
        "started_at": started.isoformat(),
        "finished_at": datetime.now(UTC).isoformat(),
        "quick": args.quick,
        "benchmarks": names,
        "machine": machine,
        "config": {k: str(v) if isinstance(v, Path) else v for k, v in vars(cfg).items()},
        "results": results,
        "table": lines,
    }
    path = report.write(args.out, stamp, record)
    procs.log(f"bench: wrote {path} and {args.out / 'latest.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
