"""grpc_failover's Python binding against grpcio, on the same gf-testserver, raw bytes both sides.

Rows: blocking calls from 1 thread, from 8 threads, and asyncio with 100 calls in flight. Each
side of each row runs for a fixed time after a short warm-up, ``--repeat`` times, the two sides
taking turns; the best run of each side counts (the machine may be shared). The table shows
calls per second, the 99th percentile latency and ours/grpcio. Prints the table and writes it as
a markdown fragment.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import subprocess
import sys
import threading
import time
from typing import Callable, List, Tuple

import grpc
import grpc.aio

import grpc_failover

METHOD = "/bench.Echo/Echo"


class Result:
    def __init__(self, calls: int, seconds: float, latencies: List[float]):
        self.calls = calls
        self.rate = calls / seconds
        latencies.sort()
        self.p99_ms = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000 if latencies else float("nan")


def run_threads(call: Callable[[], object], threads: int, seconds: float, warmup: float) -> Result:
    stop_at = [0.0]
    per_thread: List[List[float]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)

    def worker(lat: List[float]) -> None:
        start.wait()
        clock = time.perf_counter
        warm_until = clock() + warmup
        while clock() < warm_until:
            call()
        start.wait()
        end = stop_at[0]
        while True:
            t0 = clock()
            if t0 >= end:
                break
            call()
            lat.append(clock() - t0)

    pool = [threading.Thread(target=worker, args=(lat,)) for lat in per_thread]
    for t in pool:
        t.start()
    start.wait()
    stop_at[0] = time.perf_counter() + seconds + 0.01
    begin = time.perf_counter()
    start.wait()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - begin
    lat = [x for part in per_thread for x in part]
    return Result(len(lat), elapsed, lat)


async def run_async(call: Callable[[], "asyncio.Future[object]"], concurrency: int, seconds: float, warmup: float) -> Result:
    clock = time.perf_counter
    latencies: List[float] = []

    async def worker(until: float, record: bool) -> None:
        while True:
            t0 = clock()
            if t0 >= until:
                return
            await call()
            if record:
                latencies.append(clock() - t0)

    until = clock() + warmup
    await asyncio.gather(*(worker(until, False) for _ in range(concurrency)))
    begin = clock()
    await asyncio.gather(*(worker(begin + seconds, True) for _ in range(concurrency)))
    return Result(len(latencies), clock() - begin, latencies)


def bench_ours(addr: str, payload: bytes, row: str, seconds: float, warmup: float) -> Result:
    with grpc_failover.Client(f"static:///{addr}") as c:
        c.invoke(METHOD, payload, timeout=5)
        if row == "async":
            return asyncio.run(run_async(lambda: c.invoke_async(METHOD, payload), 100, seconds, warmup))
        threads = 1 if row == "sync1" else 8
        return run_threads(lambda: c.invoke(METHOD, payload), threads, seconds, warmup)


def bench_grpcio(addr: str, payload: bytes, row: str, seconds: float, warmup: float) -> Result:
    if row == "async":

        async def main() -> Result:
            async with grpc.aio.insecure_channel(addr) as channel:
                # No serializers: grpcio sends and returns the bytes as they are.
                echo = channel.unary_unary(METHOD)
                await echo(payload, timeout=5)
                return await run_async(lambda: echo(payload), 100, seconds, warmup)

        return asyncio.run(main())
    with grpc.insecure_channel(addr) as channel:
        echo = channel.unary_unary(METHOD)
        echo(payload, timeout=5)
        threads = 1 if row == "sync1" else 8
        return run_threads(lambda: echo(payload), threads, seconds, warmup)


ROWS: List[Tuple[str, str]] = [
    ("sync1", "sync, 1 thread"),
    ("sync8", "sync, 8 threads"),
    ("async", "asyncio, 100 concurrent"),
]


def start_server(binary: str) -> Tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [binary, "--listen", "127.0.0.1:0", "--name", "bench"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline().strip() if proc.stdout else ""
    if not line.startswith("listening "):
        proc.kill()
        sys.exit(f"gf-testserver did not start: {line!r}")
    return proc, line.split(" ", 1)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=3.0, help="measured time per side and row")
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=2, help="runs per side and row; the best counts")
    parser.add_argument("--payload", type=int, default=100, help="request size in bytes")
    parser.add_argument("--server", help="host:port of a running gf-testserver (default: start one)")
    parser.add_argument("--testserver", default=os.environ.get("GF_TESTSERVER", "target/release/gf-testserver"))
    parser.add_argument("--out", default="bench/results/parts/python.md")
    args = parser.parse_args()

    server = None
    addr = args.server
    if addr is None:
        server, addr = start_server(args.testserver)
    payload = os.urandom(args.payload)
    table = []
    try:
        for key, label in ROWS:
            ours_runs, their_runs = [], []
            for _ in range(args.repeat):
                ours_runs.append(bench_ours(addr, payload, key, args.seconds, args.warmup))
                their_runs.append(bench_grpcio(addr, payload, key, args.seconds, args.warmup))
            ours = max(ours_runs, key=lambda r: r.rate)
            theirs = max(their_runs, key=lambda r: r.rate)
            table.append((label, ours, theirs))
            print(
                f"{label:26} ours {ours.rate:9.0f}/s p99 {ours.p99_ms:6.2f} ms   "
                f"grpcio {theirs.rate:9.0f}/s p99 {theirs.p99_ms:6.2f} ms   {ours.rate / theirs.rate:.2f}x",
                flush=True,
            )
    finally:
        if server is not None:
            server.terminate()
            server.wait()

    cores = os.cpu_count()
    today = datetime.date.today().isoformat()
    lines = [
        "## Python binding vs grpcio",
        "",
        f"{cores} cores, {today}; grpc_failover {grpc_failover.library_version()} vs grpcio {grpc.__version__}, "
        f"Python {sys.version.split()[0]}; one local gf-testserver (`/bench.Echo/Echo`, {args.payload}-byte requests, "
        f"raw bytes both sides); best of {args.repeat} runs of {args.seconds:g} s per side and row, "
        f"each after {args.warmup:g} s of warm-up.",
        "",
        "| row | ours calls/s | ours p99 | grpcio calls/s | grpcio p99 | ratio |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, ours, theirs in table:
        lines.append(
            f"| {label} | {ours.rate:,.0f} | {ours.p99_ms:.2f} ms | {theirs.rate:,.0f} | "
            f"{theirs.p99_ms:.2f} ms | {ours.rate / theirs.rate:.2f}x |"
        )
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
