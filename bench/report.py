"""The end-of-run table and the JSON record of a run."""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import platform
import sys
from pathlib import Path
from typing import Any

import orjson

from bench.config import PG_PUBLISH_TARGET_RATIO
from bench.procs import REPO_ROOT

Row = tuple[str, str, str, str, str, str, str]
HEADER: Row = ("bench", "metric", "webhookd", "raw", "ratio", "target", "result")
FOOTNOTES = [
    "ratio: ingest = webhookd req/s / raw req/s, and its batch row's webhookd = batch events/s, raw =",
    "  single-publish events/s in the same run; delivery = raw first->last drain time / webhookd's (the",
    "  drain-rate ratio; start->last includes process startup and is not adjusted); latency = webhookd p99 /",
    "  raw relay p99 (lower is better; the target there is absolute). CPU share: 1.00 = one core busy.",
    "paging: webhookd = customer B's publishes while customer A lists, raw = B alone in the same run,",
    "  ratio = the first / the second.",
    "fairness: webhookd = customer B's publish-acknowledged -> arrival latency while customer A's slow",
    "  endpoint has a backlog, raw = B alone in the same run; A's rate against cap / A's answer delay.",
    "claims: webhookd = the big backlog, raw = the small one, ratio = big / small (about 1: a claim does",
    "  not grow with the backlog).",
    "dashboard: webhookd = p50 / p99 ms of each page fetched one at a time, signed in, with that many",
    "  deliveries of one customer in the store.",
]
PACKAGES = ("aiohttp", "uvicorn", "starlette", "aiosqlite", "orjson", "webhookd")


def _num(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _pair(a: Any, b: Any) -> str:
    return f"{_num(a, 2)} / {_num(b, 2)}"


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def _db_states(statuses: dict[str, int]) -> str:
    """``delivered / everything else`` from webhookd's own deliveries table."""
    delivered = statuses.get("delivered", 0)
    others = {k: v for k, v in statuses.items() if k != "delivered"}
    detail = ", ".join(f"{k} {v:,}" for k, v in sorted(others.items()))
    return f"{delivered:,} / {sum(others.values()):,}" + (f" ({detail})" if detail else "")


def _row(
    bench: str, metric: str, webhookd: str, raw: str, ratio: str = "", target: str = "", verdict: str = ""
) -> Row:
    return (bench, metric, webhookd, raw, ratio, target, verdict)


def _counts(a: int, b: int) -> str:
    return f"{a:,} / {b:,}"


def ingest_rows(r: dict[str, Any]) -> list[Row]:
    wh, raw = r["webhookd"], r["raw"]
    title = f"throughput req/s ({r['concurrency']} conns, {r['duration_s']:g}s in {r['rounds']} turns)"
    target, verdict = f">= {r['target_ratio']}", _verdict(r["meets_target"])
    return [
        _row(
            "ingest",
            title,
            _num(wh["rate_per_s"]),
            _num(raw["rate_per_s"]),
            _num(r["ratio"], 2),
            target,
            verdict,
        ),
        _row("ingest", "request latency p50 ms", _num(wh["p50_ms"], 2), _num(raw["p50_ms"], 2)),
        _row("ingest", "request latency p99 ms", _num(wh["p99_ms"], 2), _num(raw["p99_ms"], 2)),
        _row(
            "ingest",
            "CPU share: server / load generator",
            _pair(wh["server_cpu_share"], wh["client_cpu_share"]),
            _pair(raw["server_cpu_share"], raw["client_cpu_share"]),
        ),
        _row("ingest", "2xx / errors", _counts(wh["ok"], wh["errors"]), _counts(raw["ok"], raw["errors"])),
        *_batch_rows(r),
    ]


def _batch_rows(r: dict[str, Any]) -> list[Row]:
    """webhookd's batch publish against its single publish, in durable events/s (webhookd / raw columns)."""
    batch, single = r["batch"], r["webhookd"]
    return [
        _row(
            "ingest",
            f"events/s: batch of {batch['events_per_request']} / single publish",
            _num(batch["events_per_s"]),
            _num(single["events_per_s"]),
            _num(r["batch_ratio"], 2),
            f">= {r['batch_target_ratio']:g}",
            _verdict(r["batch_meets_target"]),
        ),
        _row("ingest", "batch request latency p50 / p99 ms", _pair(batch["p50_ms"], batch["p99_ms"]), ""),
    ]


def delivery_rows(r: dict[str, Any]) -> list[Row]:
    wh, raw = r["webhookd"], r["raw"]
    target, verdict = f">= {r['target_ratio']}", _verdict(r["meets_target"])
    first_last = "first->last drain s (ratio on this)"
    return [
        _row(
            "delivery",
            f"start->last s, {r['events']:,} events (incl. startup)",
            _num(wh["start_to_last_s"], 2),
            _num(raw["start_to_last_s"], 2),
        ),
        _row(
            "delivery",
            first_last,
            _num(wh["drain_s"], 2),
            _num(raw["drain_s"], 2),
            _num(r["ratio"], 2),
            target,
            verdict,
        ),
        _row("delivery", "drain rate events/s", _num(wh["drain_rate_per_s"]), _num(raw["drain_rate_per_s"])),
        _row(
            "delivery",
            "received distinct / duplicates",
            _counts(wh["received_distinct"], wh["duplicates"]),
            _counts(raw["received_distinct"], raw["duplicates"]),
        ),
        _row(
            "delivery",
            "CPU share: sender / receiver",
            _pair(wh.get("worker_cpu_share"), wh["receiver_cpu_share"]),
            _pair(raw.get("sender_cpu_share"), raw["receiver_cpu_share"]),
        ),
        _row("delivery", "db after stop: delivered / other", _db_states(wh["db_delivery_statuses"]), ""),
    ]


def latency_rows(r: dict[str, Any]) -> list[Row]:
    wh, raw = r["webhookd"], r["raw"]
    e, e_raw = wh["e2e"], raw["e2e"]
    target, verdict = f"<= {r['target_p99_ms']:g} ms", _verdict(r["meets_target"])
    p50 = f"e2e p50 ms ({r['rate_per_s']:g}/s for {r['duration_s']:g}s)"
    return [
        _row("latency", p50, _num(e["p50_ms"], 2), _num(e_raw["p50_ms"], 2)),
        _row("latency", "e2e p95 ms", _num(e["p95_ms"], 2), _num(e_raw["p95_ms"], 2)),
        _row(
            "latency",
            "e2e p99 ms",
            _num(e["p99_ms"], 2),
            _num(e_raw["p99_ms"], 2),
            _num(r["p99_ratio"], 2),
            target,
            verdict,
        ),
        _row("latency", "e2e max ms", _num(e["max_ms"], 2), _num(e_raw["max_ms"], 2)),
        _row(
            "latency",
            "achieved publish rate /s",
            _num(wh["achieved_publish_rate_per_s"]),
            _num(raw["achieved_publish_rate_per_s"]),
        ),
        _row(
            "latency",
            "delivered / published (2xx)",
            _counts(wh["delivered"], wh["published_ok"]),
            _counts(raw["delivered"], raw["published_ok"]),
        ),
        _row(
            "latency",
            "publish request p99 ms",
            _num(wh["publish"]["p99_ms"], 2),
            _num(raw["publish"]["p99_ms"], 2),
        ),
        _row(
            "latency",
            "CPU share: server / receiver",
            _pair(wh["server_cpu_share"], wh["receiver_cpu_share"]),
            _pair(raw["server_cpu_share"], raw["receiver_cpu_share"]),
        ),
        _row("latency", "db after stop: delivered / other", _db_states(wh["db_delivery_statuses"]), ""),
    ]


def _shares(cpu: dict[str, Any], kinds: tuple[str, ...]) -> str:
    return " / ".join(_num(cpu.get(kind), 2) for kind in kinds)


def _publish_rows(r: dict[str, Any]) -> list[Row]:
    rows = []
    for n, found in r["publish"].items():
        last = found["runs"][-1]
        rows += [
            _row(
                "postgres",
                f"{n} API node(s): publish events/s, mean of {len(found['runs'])} (ratio to the first)",
                _num(found["rate_per_s"]),
                "",
                _num(r["publish_scaling"][n], 2),
            ),
            _row(
                "postgres",
                f"{n} API node(s): CPU share API nodes / database / load generator",
                _shares(last["cpu_share"], ("api_nodes", "database", "client")),
                "",
            ),
            _row(
                "postgres",
                f"{n} API node(s): commits / statements per published event",
                _pair(last.get("commits_per_event"), last.get("statements_per_event")),
                "",
            ),
        ]
    ratio = r["publish_ratio"]
    rows.append(
        _row(
            "postgres",
            "publish events/s, one API node: PostgreSQL vs SQLite (means, alternating runs)",
            _num(r["postgres_publish_rate_per_s"]),
            _num(r["sqlite_publish"]["rate_per_s"]),
            _num(ratio, 2),
            f">= {PG_PUBLISH_TARGET_RATIO}",
            "-" if ratio is None else _verdict(ratio >= PG_PUBLISH_TARGET_RATIO),
        )
    )
    return rows


def _drain_rows(r: dict[str, Any]) -> list[Row]:
    rows = []
    for n, run in r["runs"].items():
        statements = run.get("statements_per_event") or {}
        rows += [
            _row(
                "postgres",
                f"{n} worker(s): drain events/s, {r['events']:,} events, {r['drain_customers']} customers"
                " (ratio to the first)",
                _num(run["drain_rate_per_s"]),
                "",
                _num(r["scaling"][n], 2),
            ),
            _row(
                "postgres",
                f"{n} worker(s): CPU share workers / receivers / database",
                _shares(run.get("cpu_share") or {}, ("workers", "receivers", "database")),
                "",
            ),
            _row(
                "postgres",
                f"{n} worker(s): received distinct / duplicates",
                _counts(run["received_distinct"], run["duplicates"]),
                "",
            ),
            _row(
                "postgres",
                f"{n} worker(s): statements per delivered event, all / claims'",
                _pair(_num(statements.get("all"), 2), _num(statements.get("claim"), 2)),
                "",
            ),
        ]
    return rows


def postgres_rows(r: dict[str, Any]) -> list[Row]:
    return _publish_rows(r) + _drain_rows(r)


def _answers(summary: dict[str, Any]) -> str:
    """``2xx``, then each other kind of answer with its count."""
    kinds = ", ".join(f"{kind} {count:,}" for kind, count in sorted(summary["error_kinds"].items()))
    return f"{summary['ok']:,} 2xx" + (f", {kinds}" if kinds else "")


def paging_rows(r: dict[str, Any]) -> list[Row]:
    alone = r["alone"]["publish"]
    rows = [
        _row(
            "paging",
            f"B publish ({r['b_rate_per_s']:g}/s, {r['duration_s']:g}s) 2xx / errors, B alone",
            "",
            _counts(alone["ok"], alone["errors"]),
        )
    ]
    for offset, during in r["during"].items():
        publish, listings = during["publish"], during["listings"]
        where = f"A {r['listers']} x page at offset {int(offset):,}"
        for pct in ("p50", "p99"):
            ours, base = publish[f"{pct}_ms"], alone[f"{pct}_ms"]
            ratio = _num(ours / base, 2) if base else "-"
            rows.append(_row("paging", f"B publish {pct} ms, {where}", _num(ours, 2), _num(base, 2), ratio))
        rows += [
            _row("paging", f"B publish 2xx / errors, {where}", _counts(publish["ok"], publish["errors"]), ""),
            _row("paging", f"A listing answers, {where}", _answers(listings), ""),
            _row("paging", f"A listing p50 ms, {where}", _num(listings["p50_ms"], 2), ""),
        ]
    return rows


def fairness_rows(r: dict[str, Any]) -> list[Row]:
    beside, alone, a = r["b_with_a"], r["b_alone"], r["a"]
    rows = []
    for pct in ("p50", "p99"):
        metric = f"B e2e {pct} ms ({r['b_events']} events at {r['b_rate_per_s']:g}/s)"
        if pct == "p99":
            metric = f"B e2e p99 ms, A: {a['backlog']:,} pending, answers in {a['delay_s']:g} s"
        ours, base = beside["e2e"][f"{pct}_ms"], alone["e2e"][f"{pct}_ms"]
        rows.append(_row("fairness", metric, _num(ours, 2), _num(base, 2), _num(r[f"{pct}_ratio"], 2)))
    a_rate = a["rate_per_s"]
    return [
        *rows,
        _row("fairness", "B e2e max ms", _num(beside["e2e"]["max_ms"], 2), _num(alone["e2e"]["max_ms"], 2)),
        _row(
            "fairness",
            "B delivered / published (2xx)",
            _counts(beside["delivered"], beside["published_ok"]),
            _counts(alone["delivered"], alone["published_ok"]),
        ),
        _row(
            "fairness",
            f"A deliveries/s vs cap {a['cap']} / {a['delay_s']:g} s",
            _num(a_rate, 2),
            _num(a["expected_rate_per_s"], 2),
            _num(a_rate / a["expected_rate_per_s"], 2) if a_rate else "-",
        ),
        _row(
            "fairness",
            f"A received in {a['window_s']:g} s / pending at start",
            _counts(a["received"], a["backlog"]),
            "",
        ),
    ]


def claims_rows(r: dict[str, Any]) -> list[Row]:
    rows = []
    for name, found in r["stores"].items():
        small, big = found["small"], found["big"]
        sizes = f"{big['size']:,} / {small['size']:,} pending"
        for pct in ("p50", "p99"):
            metric = f"{name} claim of {r['claim_limit']} {pct} ms, {sizes}"
            ours, base = big[f"{pct}_ms"], small[f"{pct}_ms"]
            rows.append(_row("claims", metric, _num(ours, 2), _num(base, 2), _num(found[f"{pct}_ratio"], 2)))
        build = f"{name} backlog build s, {sizes}"
        rows.append(_row("claims", build, _num(big["build_s"]), _num(small["build_s"])))
    return rows


def dashboard_rows(r: dict[str, Any]) -> list[Row]:
    rows = []
    for name, found in r["stores"].items():
        stored = f"{r['deliveries']:,} deliveries"
        rows.append(_row("dashboard", f"{name} store build s, {stored}", _num(found["build_s"]), ""))
        for page, timed in found["pages"].items():
            metric = f"{name} {page} p50 / p99 ms ({timed['requests']} GETs)"
            rows.append(_row("dashboard", metric, _pair(timed["p50_ms"], timed["p99_ms"]), ""))
    return rows


def table(results: dict[str, Any]) -> list[str]:
    builders = {
        "ingest": ingest_rows,
        "delivery": delivery_rows,
        "latency": latency_rows,
        "postgres": postgres_rows,
        "paging": paging_rows,
        "fairness": fairness_rows,
        "claims": claims_rows,
        "dashboard": dashboard_rows,
    }
    rows = [HEADER]
    for name, build in builders.items():
        if name in results:
            rows += build(results[name])
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = []
    for index, row in enumerate(rows):
        cells = [
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines += FOOTNOTES
    return lines


def _filesystem_of(path: Path) -> str:
    best, fstype = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return fstype
    for line in mounts:
        parts = line.split()
        if len(parts) > 2 and str(path).startswith(parts[1]) and len(parts[1]) > len(best):
            best, fstype = parts[1], parts[2]
    return fstype


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def load_average() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except (OSError, ValueError):
        return None


def machine(tmp_dir: Path) -> dict[str, Any]:
    return {
        "loadavg_at_start": load_average(),
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "python_full": sys.version,
        "platform": platform.platform(),
        "packages": {name: _version(name) for name in PACKAGES},
        "tmp_dir": str(tmp_dir),
        "tmp_filesystem": _filesystem_of(tmp_dir),
        "git_head": _git_head(),
        "webhookd_source_sha256": source_fingerprint(),
    }


def source_fingerprint() -> str:
    """SHA-256 over webhookd's .py and .sql files: which code a run measured, without git."""
    digest = hashlib.sha256()
    root = REPO_ROOT / "webhookd"
    for path in sorted(p for p in root.rglob("*") if p.suffix in {".py", ".sql"}):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _git_head() -> str | None:
    """The checked-out commit, read from .git without running git."""
    head = REPO_ROOT / ".git" / "HEAD"
    try:
        text = head.read_text().strip()
        if not text.startswith("ref: "):
            return text
        ref = text.removeprefix("ref: ")
        ref_file = REPO_ROOT / ".git" / ref
        if ref_file.exists():
            return ref_file.read_text().strip()
        for line in (REPO_ROOT / ".git" / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        return None
    return None


def write(out_dir: Path, stamp: str, record: dict[str, Any]) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = orjson.dumps(record, option=orjson.OPT_INDENT_2)
    path = out_dir / f"{stamp}.json"
    path.write_bytes(data)
    (out_dir / "latest.json").write_bytes(data)
    return path
