"""REST API benchmark: requests/s and latency of a user listing and an alias creation.

    .venv/bin/python -m bench.api_bench [--users 200] [--clients 1 4] [--seconds 10]

The API runs as it would in production, in its own process: uvicorn serving
`mailstack.api.create_api` over a SQLite datastore with one domain of --users users, pinned
to core 0 (`taskset`). Client processes (core 1), each with one keep-alive connection and an
admin token, send requests back to back for --seconds: `GET /me` (the framework and the
token check alone, for comparison), `GET /users?domain=example.com` (the listing, every
user), then `POST /aliases` (a new alias each time). Reported per client
count: requests/s, p50/p90/p99 latency, and the server's RSS/PSS after the load (what the
web stack costs the worker). Results go to bench/results/api.json and api.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from itertools import count
from pathlib import Path

import httpx
from tests.helpers import free_port, wait_for

from mailstack.api import create_api
from mailstack.store import MailStore, open_engine

RESULTS = Path(__file__).parent / "results"
DB_VARIABLE = "MAILSTACK_API_BENCH_DB"


def make_app() -> object:
    """The uvicorn factory (`--factory bench.api_bench:make_app`)."""
    database = os.environ[DB_VARIABLE]
    return create_api(open_engine(database), dkim_keys=Path(database).parent)


def _pinned(core: int) -> list[str]:
    return ["taskset", "-c", str(core)] if shutil.which("taskset") else []


def _memory_kib(pid: int) -> dict[str, int]:
    found: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            found[key.lower()] = int(rest.split()[0])
    return found


def _client(args: tuple[str, str, str, float, int]) -> list[float]:
    """One connection, requests back to back until the time is up: latencies in ms."""
    base, token, kind, seconds, worker = args
    os.sched_setaffinity(0, {1 % os.cpu_count()})  # type: ignore[operator]
    latencies: list[float] = []
    serial = count()
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            if kind == "whoami":
                response = http.get("/me")
            elif kind == "list users":
                response = http.get("/users", params={"domain": "example.com"})
            else:
                source = f"a{worker}-{next(serial)}-{os.getpid()}@example.com"
                response = http.post(
                    "/aliases", json={"source": source, "targets": ["user0@example.com"]}
                )
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code >= 300:
                raise RuntimeError(f"{kind}: {response.status_code} {response.text}")
    return latencies


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def run(users: int, clients: list[int], seconds: float) -> dict[str, object]:
    folder = Path(tempfile.mkdtemp(prefix="mailstack-api-bench-"))
    database = folder / "mailstack.db"
    store = MailStore(open_engine(database))
    store.add_domain("example.com")
    hash_ = None
    for n in range(users):
        if hash_ is None:
            store.add_user(f"user{n}@example.com", "benchmark password")
            with store.engine.connect() as conn:
                hash_ = conn.exec_driver_sql("SELECT password_hash FROM users").scalar_one()
        else:
            store.add_user(f"user{n}@example.com", password_hash=hash_)
    _, token = store.create_token("bench")
    store.close()
    port = free_port()
    server = subprocess.Popen(
        [
            *_pinned(0), sys.executable, "-m", "uvicorn", "--factory", "bench.api_bench:make_app",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
            "--no-access-log",
        ],
        env={**os.environ, DB_VARIABLE: str(database)},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    rows: list[dict[str, object]] = []
    try:
        wait_for(lambda: _answers(base), 30, "the API under uvicorn")
        idle = _memory_kib(server.pid)
        for kind in ("whoami", "list users", "create alias"):
            for n in clients:
                with multiprocessing.Pool(n) as pool:
                    parts = pool.map(_client, [(base, token, kind, seconds, w) for w in range(n)])
                latencies = [ms for part in parts for ms in part]
                rows.append(
                    {
                        "request": kind,
                        "clients": n,
                        "requests_per_second": round(len(latencies) / seconds, 1),
                        "p50_ms": round(statistics.median(latencies), 2),
                        "p90_ms": round(_percentile(latencies, 0.90), 2),
                        "p99_ms": round(_percentile(latencies, 0.99), 2),
                    }
                )
                print(rows[-1], flush=True)
        loaded = _memory_kib(server.pid)
    finally:
        server.terminate()
        server.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    return {"users": users, "seconds": seconds, "idle": idle, "after_load": loaded, "rows": rows}


def _answers(base: str) -> bool:
    try:
        return httpx.get(f"{base}/openapi.json", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def write(result: dict[str, object]) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "api.json").write_text(json.dumps(result, indent=2) + "\n")
    idle, loaded = result["idle"], result["after_load"]
    assert isinstance(idle, dict)
    assert isinstance(loaded, dict)
    lines = [
        "# REST API benchmark",
        "",
        f"uvicorn (one process, core 0) serving `create_api` over SQLite, one domain with "
        f"{result['users']} users; clients on core 1, one keep-alive connection each, "
        f"{result['seconds']} s per row. Generated by `python -m bench.api_bench`.",
        "",
        "| request | clients | requests/s | p50 ms | p90 ms | p99 ms |",
        "|---|---|---|---|---|---|",
    ]
    rows = result["rows"]
    assert isinstance(rows, list)
    for row in rows:
        lines.append(
            f"| {row['request']} | {row['clients']} | {row['requests_per_second']} | "
            f"{row['p50_ms']} | {row['p90_ms']} | {row['p99_ms']} |"
        )
    lines += [
        "",
        f"Server process memory: idle RSS {idle['rss'] / 1024:.1f} MiB, PSS "
        f"{idle['pss'] / 1024:.1f} MiB; after the load RSS {loaded['rss'] / 1024:.1f} MiB, "
        f"PSS {loaded['pss'] / 1024:.1f} MiB (uvicorn, FastAPI, pydantic, SQLAlchemy and "
        "the datastore engine).",
        "",
    ]
    (RESULTS / "api.md").write_text("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=200)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--seconds", type=float, default=10.0)
    options = parser.parse_args()
    result = run(options.users, options.clients, options.seconds)
    write(result)
    print((RESULTS / "api.md").read_text())


if __name__ == "__main__":
    main()
