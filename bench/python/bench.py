"""grpc_failover's Python binding against grpcio, on the same gf-testserver.

Two tables. Raw bytes: ``grpc_failover.Client`` against a grpcio channel's ``unary_unary`` with
no serializers. Generated stubs: the ``EchoerStub`` that grpcio-tools generates from
tests/proto/echo.proto (now, into a temporary directory) over ``grpc_failover.Channel`` and
``grpc_failover.aio.Channel`` against the same stub over ``grpc.insecure_channel`` and
``grpc.aio.insecure_channel``.

Rows: blocking calls from 1 thread, from 8 threads (and, in the raw table, from 32), and asyncio
with 100 calls in flight. Each side of each row runs for a fixed time after a short warm-up,
``--repeat`` times (``--raw-repeat`` in the raw table), the two sides taking turns. A table shows
each side's best run (the machine may be shared), its calls per second and 99th percentile
latency, ours/grpcio of the best runs and of the median runs, and the client CPU time per call:
this process's user + system time (getrusage, every thread) over a run's measured window per
call, the median of the runs. Prints the tables and writes them as a markdown fragment;
``--cpu-json`` writes every raw run as a JSON line, and ``--raw-only`` measures the raw table
alone (bench/run.sh runs that again with GF_SYNC_SPIN_US=0, in a new process: the library reads
it once).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import functools
import importlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any, Callable, List, NamedTuple, Optional, Tuple

import google.protobuf
import grpc
import grpc.aio

import grpc_failover
import grpc_failover.aio

METHOD = "/bench.Echo/Echo"
PROTO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "proto", "echo.proto")
STUB_TARGET = 2.0


def cpu_time() -> float:
    """User + system CPU seconds of this process: every thread, the library's and grpcio's too."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class Result:
    def __init__(self, calls: int, seconds: float, latencies: List[float], cpu: float):
        self.calls = calls
        self.rate = calls / seconds
        self.cpu_us_per_call = cpu * 1e6 / calls if calls else float("nan")
        latencies.sort()
        self.p99_ms = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1000 if latencies else float("nan")


def run_threads(call: Callable[[], object], threads: int, seconds: float, warmup: float) -> Result:
    stop_at = [0.0]
    begin = [0.0, 0.0]  # perf_counter and CPU time when the measured window opens
    per_thread: List[List[float]] = [[] for _ in range(threads)]
    start = threading.Barrier(threads + 1)

    def open_window() -> None:
        begin[:] = [time.perf_counter(), cpu_time()]
        stop_at[0] = begin[0] + seconds

    # The window opens once every thread has warmed up, before any is let go.
    warmed = threading.Barrier(threads, action=open_window)

    def worker(lat: List[float]) -> None:
        start.wait()
        clock = time.perf_counter
        warm_until = clock() + warmup
        while clock() < warm_until:
            call()
        warmed.wait()
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
    for t in pool:
        t.join()
    elapsed, cpu = time.perf_counter() - begin[0], cpu_time() - begin[1]
    lat = [x for part in per_thread for x in part]
    return Result(len(lat), elapsed, lat, cpu)


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
    cpu = cpu_time()
    begin = clock()
    await asyncio.gather(*(worker(begin + seconds, True) for _ in range(concurrency)))
    elapsed = clock() - begin
    return Result(len(latencies), elapsed, latencies, cpu_time() - cpu)


# Each opener takes the server's address last, opens a client (a context manager; an async one
# for the asyncio row) and yields its call: ``call()`` makes one call, ``call(timeout=5)`` too.


@contextlib.contextmanager
def raw_ours(payload: bytes, addr: str) -> Any:
    with grpc_failover.Client(f"static:///{addr}") as c:
        yield functools.partial(c.invoke, METHOD, payload)


@contextlib.asynccontextmanager
async def raw_ours_aio(payload: bytes, addr: str) -> Any:
    with grpc_failover.Client(f"static:///{addr}") as c:
        yield functools.partial(c.invoke_async, METHOD, payload)


@contextlib.contextmanager
def raw_grpcio(payload: bytes, addr: str) -> Any:
    with grpc.insecure_channel(addr) as channel:
        # No serializers: grpcio sends and returns the bytes as they are.
        yield functools.partial(channel.unary_unary(METHOD), payload)


@contextlib.asynccontextmanager
async def raw_grpcio_aio(payload: bytes, addr: str) -> Any:
    async with grpc.aio.insecure_channel(addr) as channel:
        yield functools.partial(channel.unary_unary(METHOD), payload)


@contextlib.contextmanager
def stub(new_channel: Callable[[str], Any], stubs: Any, request: Any, addr: str) -> Any:
    with new_channel(addr) as channel:
        yield functools.partial(stubs.EchoerStub(channel).Echo, request)


@contextlib.asynccontextmanager
async def stub_aio(new_channel: Callable[[str], Any], stubs: Any, request: Any, addr: str) -> Any:
    # Made inside the event loop: grpc.aio channels belong to the loop they are made in.
    async with new_channel(addr) as channel:
        yield functools.partial(stubs.EchoerStub(channel).Echo, request)


class Side(NamedTuple):
    """One client under test: its opener for the blocking rows and for the asyncio row."""

    sync: Callable[[str], Any]
    aio: Callable[[str], Any]


def run_side(side: Side, addr: str, row: str, seconds: float, warmup: float) -> Result:
    if row == "async":

        async def main() -> Result:
            async with side.aio(addr) as call:
                await call(timeout=5)
                return await run_async(call, 100, seconds, warmup)

        return asyncio.run(main())
    with side.sync(addr) as call:
        call(timeout=5)
        return run_threads(call, THREADS[row], seconds, warmup)


ROWS: List[Tuple[str, str]] = [
    ("sync1", "sync, 1 thread"),
    ("sync8", "sync, 8 threads"),
    ("sync32", "sync, 32 threads"),
    ("async", "asyncio, 100 concurrent"),
]
THREADS = {"sync1": 1, "sync8": 8, "sync32": 32}
CONCURRENCY = {**THREADS, "async": 100}
# The stub table leaves out the 32-thread row (it adds little over 8 threads but time).
STUB_ROWS = ["sync1", "sync8", "async"]


class Row(NamedTuple):
    key: str
    label: str
    ours: List[Result]
    theirs: List[Result]

    def best(self) -> Tuple[Result, Result]:
        return max(self.ours, key=lambda r: r.rate), max(self.theirs, key=lambda r: r.rate)

    def ratios(self) -> Tuple[float, float]:
        """ours/grpcio of the best runs and of the median runs."""
        ours, theirs = self.best()
        median = statistics.median(r.rate for r in self.ours) / statistics.median(r.rate for r in self.theirs)
        return ours.rate / theirs.rate, median

    def cpu(self) -> Tuple[float, float]:
        """The median CPU µs per call of ours and of grpcio."""
        return (statistics.median(r.cpu_us_per_call for r in self.ours),
                statistics.median(r.cpu_us_per_call for r in self.theirs))


def compare(title: str, ours: Side, theirs: Side, addr: str, keys: List[str], repeat: int,
            args: argparse.Namespace) -> List[Row]:
    rows = []
    for key, label in ROWS:
        if key not in keys:
            continue
        row = Row(key, label, [], [])
        for _ in range(repeat):
            row.ours.append(run_side(ours, addr, key, args.seconds, args.warmup))
            row.theirs.append(run_side(theirs, addr, key, args.seconds, args.warmup))
        best, median = row.ratios()
        o, t = row.best()
        oc, tc = row.cpu()
        print(
            f"{title:6} {label:26} ours {o.rate:9.0f}/s p99 {o.p99_ms:6.2f} ms {oc:6.1f} µs CPU   "
            f"grpcio {t.rate:9.0f}/s p99 {t.p99_ms:6.2f} ms {tc:6.1f} µs CPU   {best:.2f}x (medians {median:.2f}x)",
            flush=True,
        )
        rows.append(row)
    return rows


def table(rows: List[Row]) -> List[str]:
    lines = [
        "| row | ours calls/s | ours p99 | grpcio calls/s | grpcio p99 | ratio (best runs) | ratio (median runs) "
        "| client CPU per call, ours / grpcio (median runs) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        ours, theirs = row.best()
        best, median = row.ratios()
        oc, tc = row.cpu()
        lines.append(
            f"| {row.label} | {ours.rate:,.0f} | {ours.p99_ms:.2f} ms | {theirs.rate:,.0f} | "
            f"{theirs.p99_ms:.2f} ms | {best:.2f}x | {median:.2f}x | {oc:.1f} / {tc:.1f} µs ({oc / tc:.2f}x) |"
        )
    return lines


def write_cpu_json(path: str, rows: List[Row]) -> None:
    """Every run of rows as a JSON line: calls/s and CPU per call."""
    with open(path, "w") as f:
        for row in rows:
            for client, runs in (("grpc_failover", row.ours), ("grpcio", row.theirs)):
                for r in runs:
                    f.write(json.dumps({"client": client, "row": row.key, "label": row.label,
                                        "concurrency": CONCURRENCY[row.key], "calls_per_s": r.rate,
                                        "p99_us": r.p99_ms * 1000, "cpu_us_per_call": r.cpu_us_per_call}) + "\n")


def verdict(rows: List[Row], which: int, target: float) -> str:
    lowest = min(row.ratios()[which] for row in rows)
    return "met" if lowest >= target else f"not met (lowest {lowest:.2f}x)"


def runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def generate_stubs(proto: str, out: str) -> Tuple[Any, Any]:
    """The ``_pb2`` and ``_pb2_grpc`` modules of proto, generated now into out by grpcio-tools."""
    proto = os.path.abspath(proto)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{os.path.dirname(proto)}", f"--python_out={out}",
         f"--grpc_python_out={out}", proto],
        check=True,
    )
    sys.path.insert(0, out)
    name = os.path.splitext(os.path.basename(proto))[0]
    return importlib.import_module(name + "_pb2"), importlib.import_module(name + "_pb2_grpc")


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
    parser.add_argument("--raw-repeat", type=int, help="runs per side and row of the raw table (default: --repeat)")
    parser.add_argument("--rows", default=",".join(k for k, _ in ROWS),
                        help="raw rows to measure, comma-separated (default: all: %(default)s)")
    parser.add_argument("--raw-only", action="store_true", help="measure the raw table only; write no markdown")
    parser.add_argument("--cpu-json", help="write every raw run as a JSON line to this file")
    parser.add_argument("--payload", type=int, default=100, help="request size in bytes (the blob's in the stub rows)")
    parser.add_argument("--server", help="host:port of a running gf-testserver (default: start one)")
    parser.add_argument("--testserver", default=os.environ.get("GF_TESTSERVER", "target/release/gf-testserver"))
    parser.add_argument("--out", default="bench/results/parts/python.md")
    args = parser.parse_args()
    raw_keys = args.rows.split(",")
    unknown = set(raw_keys) - {k for k, _ in ROWS}
    if unknown:
        parser.error(f"unknown rows: {', '.join(sorted(unknown))}")
    raw_repeat = args.raw_repeat or args.repeat

    payload = os.urandom(args.payload)
    server: Optional[subprocess.Popen] = None
    addr = args.server
    with tempfile.TemporaryDirectory(prefix="gf-bench-stubs-") as stub_dir:
        pb, stubs = generate_stubs(PROTO, stub_dir)
        # gf-testserver's Echo returns the request bytes: the EchoRequest comes back as an
        # EchoReply with the same fields.
        request = pb.EchoRequest(text="bench", number=42, blob=payload)
        if addr is None:
            server, addr = start_server(args.testserver)
        try:
            raw = compare(
                "raw",
                Side(functools.partial(raw_ours, payload), functools.partial(raw_ours_aio, payload)),
                Side(functools.partial(raw_grpcio, payload), functools.partial(raw_grpcio_aio, payload)),
                addr,
                raw_keys,
                raw_repeat,
                args,
            )
            if args.cpu_json:
                write_cpu_json(args.cpu_json, raw)
            if args.raw_only:
                print()
                print("\n".join(table(raw)))
                return
            stubbed = compare(
                "stubs",
                Side(functools.partial(stub, grpc_failover.Channel, stubs, request),
                     functools.partial(stub_aio, grpc_failover.aio.Channel, stubs, request)),
                Side(functools.partial(stub, grpc.insecure_channel, stubs, request),
                     functools.partial(stub_aio, grpc.aio.insecure_channel, stubs, request)),
                addr,
                STUB_ROWS,
                args.repeat,
                args,
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
        f"Python {sys.version.split()[0]}; one local gf-testserver; {runs(raw_repeat)} (raw) and {runs(args.repeat)} (stubs) "
        f"of {args.seconds:g} s per side and row, the two sides taking turns, each run after {args.warmup:g} s of warm-up. "
        "Calls/s and p99 are each side's best run; the ratios are ours/grpcio of the best runs and of the median runs. "
        "Client CPU per call: the benchmark process's user + system CPU time (getrusage, every thread) over a run's "
        "measured window per call, the median of the runs (the server is another process).",
        "",
        f"Raw bytes: `grpc_failover.Client.invoke` / `invoke_async` vs a grpcio channel's `unary_unary` without "
        f"serializers, `{METHOD}` with {args.payload}-byte requests.",
        "",
        *table(raw),
        "",
        f"Generated stubs: `echo_pb2_grpc.EchoerStub(channel).Echo(request)`, the stubs grpcio-tools generates from "
        f"tests/proto/echo.proto (protobuf {google.protobuf.__version__}), over `grpc_failover.Channel` / "
        "`grpc_failover.aio.Channel` vs `grpc.insecure_channel` / `grpc.aio.insecure_channel`; an `EchoRequest` "
        f"with text, number and a {args.payload}-byte blob ({request.ByteSize()} bytes encoded), decoded from the "
        "reply as an `EchoReply`.",
        "",
        *table(stubbed),
        "",
        f"Target: stubs ours/grpcio >= {STUB_TARGET:g}x in every row: best runs {verdict(stubbed, 0, STUB_TARGET)}; "
        f"median runs {verdict(stubbed, 1, STUB_TARGET)}.",
    ]
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)


if __name__ == "__main__":
    main()
