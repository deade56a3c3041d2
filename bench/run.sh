#!/usr/bin/env bash
# make bench: every comparison, measured in this run, then bench/results/latest.md and
# bench/results/failover.png. Each part writes a markdown fragment to bench/results/parts/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
LIB=$ROOT/target/release
PARTS=$ROOT/bench/results/parts
mkdir -p "$PARTS"
SECONDS_PER_ROW=${GF_BENCH_SECONDS:-3}
# Runs per client and row in the client CPU table (its median counts).
CPU_REPEAT=${GF_BENCH_CPU_REPEAT:-3}
VENV=${GF_BENCH_VENV:-$ROOT/build/venv-bench}
# The "spin on" rows are the library's default; the "off" rows run with GF_SYNC_SPIN_US=0, each in
# a process of its own (the library reads it once).
unset GF_SYNC_SPIN_US

cargo bench --bench core --no-run >/dev/null 2>&1 || cargo bench --bench core --no-run
CORE=$(ls -t target/release/deps/core-* | grep -v '\.d$' | head -1)
gcc -O2 -std=c11 -Wall -Wextra -I include bench/c/bench.c -L "$LIB" -lgrpc_failover -lpthread \
    -Wl,-rpath,"$LIB" -o "$LIB/gf-cbench"

# start_server runs in a command substitution (a subshell), so its PIDs go to a file.
PIDS=$(mktemp)
# The runs behind the client CPU table, as JSON lines, gathered by the sections that measure them.
CPU=$(mktemp -d)
cleanup() { for p in $(cat "$PIDS"); do kill "$p" 2>/dev/null || true; done; rm -rf "$PIDS" "$CPU"; }
trap cleanup EXIT

start_server() { # name [flags...] -> prints the address
    local out
    out=$(mktemp)
    "$LIB/gf-testserver" --listen 127.0.0.1:0 --name "$@" >"$out" 2>/dev/null &
    echo $! >>"$PIDS"
    for _ in $(seq 100); do
        if grep -q '^listening ' "$out"; then sed -n 's/^listening //p' "$out" | head -1; return; fi
        sleep 0.05
    done
    echo "gf-testserver did not start" >&2; exit 1
}

echo "== C ABI vs tonic direct (64-byte Echo, one gf-testserver)"
ADDR=$(start_server bench)
REPEAT=${GF_BENCH_REPEAT:-5}
{
    echo "## C ABI vs tonic direct"
    echo
    echo "64-byte Echo against one gf-testserver on loopback. C: \`gf_invoke\` from N threads on one client; tonic: \`tonic::client::Grpc\` over a \`tonic::transport::Channel\` with N concurrent tasks. The two take turns, ${REPEAT} runs of ${SECONDS_PER_ROW} s each per row; the table shows each side's best run, and the ratio of the medians too (this 2-core machine also runs the server, and single runs vary by up to a third)."
    echo
    echo "| concurrency | C ABI calls/s | C ABI p50 | C ABI p99 | tonic calls/s | tonic p50 | tonic p99 | ratio C/tonic (best runs) | ratio (median runs) | all runs C / tonic (calls/s) |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    runs=()
    for n in 1 32; do
        for _ in $(seq "$REPEAT"); do
            runs+=("$("$LIB/gf-cbench" sync "static:///$ADDR" "$n" "$SECONDS_PER_ROW")")
            runs+=("$("$CORE" direct "$ADDR" "$n" "$SECONDS_PER_ROW")")
        done
    done
    # These are the spin-on rows of the client CPU table too.
    printf '%s\n' "${runs[@]}" >"$CPU/c_on.jsonl"
    python3 - "${runs[@]}" <<'PY'
import json, statistics, sys
runs = [json.loads(r) for r in sys.argv[1:]]
best_ratios, median_ratios = [], []
for n in (1, 32):
    c_runs = [r for r in runs if r["mode"] == "sync" and r["concurrency"] == n]
    d_runs = [r for r in runs if r["mode"] == "direct" and r["concurrency"] == n]
    c = max(c_runs, key=lambda r: r["calls_per_s"])
    d = max(d_runs, key=lambda r: r["calls_per_s"])
    best = c["calls_per_s"] / d["calls_per_s"]
    median = statistics.median(r["calls_per_s"] for r in c_runs) / statistics.median(
        r["calls_per_s"] for r in d_runs
    )
    best_ratios.append(best)
    median_ratios.append(median)
    every = " / ".join(", ".join(f"{r['calls_per_s']:.0f}" for r in side) for side in (c_runs, d_runs))
    print(f"| {n} | {c['calls_per_s']:.0f} | {c['p50_us']} µs | {c['p99_us']} µs | {d['calls_per_s']:.0f} | {d['p50_us']} µs | {d['p99_us']} µs | {best:.3f} | {median:.3f} | {every} |")
print()
def verdict(ratios):
    return "met" if min(ratios) >= 0.95 else f"not met (lowest {min(ratios):.3f})"
print(f"Target: ratio >= 0.95 at both concurrencies: best runs {verdict(best_ratios)}; median runs {verdict(median_ratios)}.")
PY
} | tee "$PARTS/c_abi.md"

echo "== client CPU: C ABI and tonic with GF_SYNC_SPIN_US=0, one caller at 500 calls/s"
# The spin-off rows of the C ABI and tonic (the section above has the spin-on ones), taking
# turns; and the paced caller, spin on and off. The table is written at the end.
for n in 1 32; do
    for _ in $(seq "$CPU_REPEAT"); do
        GF_SYNC_SPIN_US=0 "$LIB/gf-cbench" sync "static:///$ADDR" "$n" "$SECONDS_PER_ROW" | tee -a "$CPU/c_off.jsonl"
        GF_SYNC_SPIN_US=0 "$CORE" direct "$ADDR" "$n" "$SECONDS_PER_ROW" | tee -a "$CPU/c_off.jsonl"
    done
done
"$LIB/gf-cbench" paced "static:///$ADDR" 500 "$SECONDS_PER_ROW" | tee "$CPU/paced_on.jsonl"
GF_SYNC_SPIN_US=0 "$LIB/gf-cbench" paced "static:///$ADDR" 500 "$SECONDS_PER_ROW" | tee "$CPU/paced_off.jsonl"

echo "== metrics on vs off (C ABI, 64-byte Echo)"
# More pairs than the other rows: the bar (3%) is well inside single-run noise here.
METRICS_PAIRS=${GF_BENCH_METRICS_PAIRS:-9}
{
    echo "## Metrics on vs off"
    echo
    echo "The C ABI row above, with the client's metrics on (the default: gRFC A66 histograms and counters recorded per call and per attempt) and off (\`\"metrics\": {\"enabled\": false}\`), against the same gf-testserver. ${METRICS_PAIRS} pairs of ${SECONDS_PER_ROW} s runs per row, on and off back to back (which goes first alternates). The ratio is the median of the pairs' on/off ratios: a pair shares the machine's state, so its ratio cancels the drift between pairs that moves single runs by up to a third; the ratio of the medians is shown too."
    echo
    echo "| concurrency | on calls/s | on p99 | off calls/s | off p99 | ratio on/off (median of pairs) | ratio of medians | median p99 on / off | off runs' p99 range | all runs on / off (calls/s) |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    runs=()
    on() { runs+=("on $("$LIB/gf-cbench" sync "static:///$ADDR" "$1" "$SECONDS_PER_ROW")"); }
    off() { runs+=("off $("$LIB/gf-cbench" sync "static:///$ADDR" "$1" "$SECONDS_PER_ROW" '{"metrics": {"enabled": false}}')"); }
    for n in 1 32; do
        # Pairs, alternating which side goes first, so neither side always runs on a
        # warmer (or busier) machine.
        for i in $(seq "$METRICS_PAIRS"); do
            if [ $((i % 2)) -eq 1 ]; then on "$n"; off "$n"; else off "$n"; on "$n"; fi
        done
    done
    python3 - "${runs[@]}" <<'PY'
import json, statistics, sys
runs = [(r.split(" ", 1)[0], json.loads(r.split(" ", 1)[1])) for r in sys.argv[1:]]
ratios, p99_within = [], []
for n in (1, 32):
    sides = [[r for k, r in runs if k == key and r["concurrency"] == n] for key in ("on", "off")]
    med = [sorted(side, key=lambda r: r["calls_per_s"])[len(side) // 2] for side in sides]
    of_medians = statistics.median(r["calls_per_s"] for r in sides[0]) / statistics.median(r["calls_per_s"] for r in sides[1])
    # Runs were recorded pair by pair, so the i-th on and the i-th off run are a pair.
    ratio = statistics.median(a["calls_per_s"] / b["calls_per_s"] for a, b in zip(*sides))
    ratios.append(ratio)
    # "No measurable p99 change": the median p99 with metrics on lies within the spread of the
    # p99s measured with them off in the same run.
    p99_on, p99_off = (statistics.median(r["p99_us"] for r in side) for side in sides)
    off_p99s = [r["p99_us"] for r in sides[1]]
    p99_within.append(min(off_p99s) <= p99_on <= max(off_p99s))
    every = " / ".join(", ".join(f"{r['calls_per_s']:.0f}" for r in side) for side in sides)
    on, off = med
    print(f"| {n} | {on['calls_per_s']:.0f} | {on['p99_us']} µs | {off['calls_per_s']:.0f} | {off['p99_us']} µs | {ratio:.3f} | {of_medians:.3f} | {p99_on:.0f} / {p99_off:.0f} µs | {min(off_p99s)}..{max(off_p99s)} µs | {every} |")
print()
verdict = "met" if min(ratios) >= 0.97 else f"not met (lowest {min(ratios):.3f})"
p99_verdict = "met" if all(p99_within) else "not met"
print(f"Target: metrics cost <= 3% calls/s (median pair ratio >= 0.97) at both concurrencies: {verdict}. No measurable p99 change (the median p99 with metrics on within the range of the runs with them off) at both: {p99_verdict}.")
PY
} | tee "$PARTS/metrics.md"

echo "== TLS: C ABI vs tonic, both over TLS (64-byte Echo, one gf-testserver)"
CERTS=$(mktemp -d)
bash scripts/test-certs.sh "$CERTS"
TLS_ADDR=$(start_server bench-tls --tls-cert "$CERTS/server.pem" --tls-key "$CERTS/server.key")
TLS_OPTIONS="{\"tls\": {\"ca_file\": \"$CERTS/ca.pem\"}}"
{
    echo "## TLS: C ABI vs tonic, both over TLS"
    echo
    echo "The same 64-byte Echo against one gf-testserver serving TLS 1.3 (an ECDSA P-256 certificate from scripts/test-certs.sh). C: \`gf_invoke\` with \`\"tls\": {\"ca_file\": ...}\`; tonic: a \`Channel\` with its \`tls-ring\` feature trusting the same CA. Both on rustls with ring. ${REPEAT} alternating runs of ${SECONDS_PER_ROW} s per row. First call: from connect to the end of the first call (TCP, TLS and HTTP/2 handshakes included), median over the runs."
    echo
    echo "| concurrency | C ABI calls/s (median) | C ABI p50 | C ABI p99 | tonic calls/s (median) | tonic p50 | tonic p99 | ratio of medians C/tonic | first call C / tonic |"
    echo "|---|---|---|---|---|---|---|---|---|"
    runs=()
    for n in 1 32; do
        for _ in $(seq "$REPEAT"); do
            runs+=("$("$LIB/gf-cbench" sync "static:///$TLS_ADDR" "$n" "$SECONDS_PER_ROW" "$TLS_OPTIONS")")
            runs+=("$("$CORE" direct "$TLS_ADDR" "$n" "$SECONDS_PER_ROW" "$CERTS/ca.pem")")
        done
    done
    python3 - "${runs[@]}" <<'PY'
import json, statistics, sys
runs = [json.loads(r) for r in sys.argv[1:]]
ratios = []
for n in (1, 32):
    sides = [[r for r in runs if r["mode"] == mode and r["concurrency"] == n] for mode in ("sync", "direct")]
    med = [sorted(side, key=lambda r: r["calls_per_s"])[len(side) // 2] for side in sides]
    ratio = med[0]["calls_per_s"] / med[1]["calls_per_s"]
    ratios.append(ratio)
    first = [statistics.median(r["first_call_ms"] for r in side) for side in sides]
    c, d = med
    print(f"| {n} | {c['calls_per_s']:.0f} | {c['p50_us']} µs | {c['p99_us']} µs | {d['calls_per_s']:.0f} | {d['p50_us']} µs | {d['p99_us']} µs | {ratio:.3f} | {first[0]:.1f} ms / {first[1]:.1f} ms |")
print()
verdict = "met" if min(ratios) >= 0.95 else f"not met (lowest {min(ratios):.3f})"
print(f"Target: ratio of medians >= 0.95 at both concurrencies: {verdict}.")
PY
} | tee "$PARTS/tls.md"
rm -rf "$CERTS"

echo "== async (256 in flight, one thread) vs sync (32 threads)"
{
    echo "## Async vs sync C calls"
    echo
    echo "| client | calls/s | p50 | p99 | errors |"
    echo "|---|---|---|---|---|"
    for spec in "async 256" "sync 32"; do
        set -- $spec
        r=$("$LIB/gf-cbench" "$1" "static:///$ADDR" "$2" "$SECONDS_PER_ROW")
        python3 - "$r" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
label = "1 thread, 256 async calls in flight" if r["mode"] == "async" else "32 threads of sync calls"
print(f"| {label} | {r['calls_per_s']:.0f} | {r['p50_us']} µs | {r['p99_us']} µs | {r['errors']} |")
PY
    done
} | tee "$PARTS/async.md"

echo "== pick cost"
{
    echo "## Pick cost (1,000 instances)"
    echo
    echo "\`Picker::pick\` in a loop on N threads sharing one picker, no network: choosing the instance. Taking a reference on it (its Arc count, then its in-flight count) is the attempt's cost, not the pick's."
    echo
    echo "| policy | threads | ns per pick (per thread) | picks/s (all threads) |"
    echo "|---|---|---|---|"
    runs=()
    for t in 1 2 8; do
        runs+=("$("$CORE" pick 1000 "$t" 2)")
    done
    python3 - "$(nproc)" "${runs[@]}" <<'PY'
import json, sys
cores = int(sys.argv[1])
runs = [json.loads(r) for r in sys.argv[2:]]
for r in runs:
    threads = r["threads"]
    label = f"{threads} (simulated: more threads than cores)" if threads > cores else str(threads)
    for name, p in r["policies"].items():
        print(f"| {name} | {label} | {p['ns_per_pick_per_thread']:.1f} | {p['picks_per_s']:.3g} |")
by_threads = {r["threads"]: r["policies"] for r in runs}
verdicts = []
for name in by_threads[1]:
    scale = by_threads[2][name]["picks_per_s"] / by_threads[1][name]["picks_per_s"]
    verdicts.append(f"{name} {'met' if scale >= 1.6 else 'not met'} ({scale:.2f}x)")
print()
print(f"Target: picks/s with 2 threads >= 1.6x 1 thread: {'; '.join(verdicts)}.")
PY
} | tee "$PARTS/pick.md"

echo "== scale: 1,000 and 10,000 instances in etcd"
# Each instance is a port of a gf-testserver (2,000 per process): 10,000 client connections plus
# as many server sockets.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
{
    echo "## Scale (1,000 and 10,000 instances in a real etcd)"
    echo
    echo "\`core scale N\`: N instances (gf-testserver processes listening on 2,000 ports each), registered in etcd in transactions of 100. *Listed*: a client connects to a prefix that already holds them (known: all in its instance list; ready: all READY; RSS: the client process's growth per instance, connections included). *Live*: a client follows the prefix while the N records are put (seconds from the first put). *Deletes*: 500 records deleted at once (four transactions back to back) until none is in the client's list, so none can be picked. *Compaction*: the history compacted past the client's watch revision, then etcd restarted: the watch cannot resume and the client re-lists the prefix (seconds from the kill; the restart itself is most of it). Round robin, no subsetting: every instance connected."
    echo
    echo "| instances | listed: known | listed: all READY | RSS per instance | live: known | live: all READY | 500 deletes gone | etcd restart | re-listed after compaction |"
    echo "|---|---|---|---|---|---|---|---|---|"
    runs=()
    for n in 1000 10000; do
        runs+=("$("$CORE" scale "$n" 2>/dev/null)")
    done
    small=$("$CORE" pick 1000 1 2)
    large=$("$CORE" pick 10000 1 2)
    python3 - "$small" "$large" "${runs[@]}" <<'PY'
import json, sys
small, large = json.loads(sys.argv[1]), json.loads(sys.argv[2])
runs = [json.loads(r) for r in sys.argv[3:]]
for r in runs:
    l, v, d, c = r["listed"], r["live"], r["deletes"], r["compaction"]
    print(f"| {r['instances']:,} | {l['known_s']:.2f} s | {l['ready_s']:.2f} s | {l['rss_kib_per_instance']:.1f} KiB | {v['known_s']:.2f} s | {v['ready_s']:.2f} s | {d['gone_s'] * 1000:.0f} ms | {c['etcd_restart_s']:.2f} s | {c['resync_s']:.2f} s |")
print()
big = next(r for r in runs if r["instances"] == 10000)
pick_ratio = max(large["policies"][p]["ns_per_pick_per_thread"] / small["policies"][p]["ns_per_pick_per_thread"] for p in small["policies"])
ns = ", ".join(f"{p} {small['policies'][p]['ns_per_pick_per_thread']:.1f} / {large['policies'][p]['ns_per_pick_per_thread']:.1f} ns" for p in small["policies"])
def verdict(ok):
    return "met" if ok else "not met"
print(f"Pick cost at 1,000 / 10,000 instances (one thread): {ns}.")
print()
print(f"Targets: 10,000 known within 2 s of connect: {verdict(big['listed']['known_s'] <= 2.0)} ({big['listed']['known_s']:.2f} s); "
      f"pick cost at 10,000 within 2x of 1,000: {verdict(pick_ratio <= 2.0)} ({pick_ratio:.2f}x); "
      f"RSS per connected instance <= 64 KiB: {verdict(big['listed']['rss_kib_per_instance'] <= 64)} ({big['listed']['rss_kib_per_instance']:.1f} KiB).")
PY
} | tee "$PARTS/scale.md"

echo "== discovery latency"
{
    echo "## Discovery latency (etcd on loopback)"
    echo
    r=$("$CORE" discovery 20)
    python3 - "$r" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print("| event | median | max | target |")
print("|---|---|---|---|")
print(f"| etcd DELETE -> last call the instance receives | {r['delete_to_last_call']['median_ms']:.1f} ms | {r['delete_to_last_call']['max_ms']:.1f} ms | <= 50 ms |")
print(f"| etcd PUT -> first call the new instance serves | {r['put_to_first_call']['median_ms']:.1f} ms | {r['put_to_first_call']['max_ms']:.1f} ms | <= 200 ms |")
print(f"\n{r['rounds']} rounds, 4 caller threads calling Whoami in a loop; the clock starts right before the PUT or DELETE request (an in-process etcd client).")
PY
} | tee "$PARTS/discovery.md"

echo "== dead instance (reference retry policy)"
{
    echo "## One dead instance out of three (reference service config)"
    echo
    r=$("$CORE" dead "$SECONDS_PER_ROW")
    python3 - "$r" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
h = r["healthy"]
print("| scenario | calls/s | vs healthy | caller-visible errors | attempts per success | p99 |")
print("|---|---|---|---|---|---|")
for label, key in [("3 healthy instances", "healthy"), ("1 of 3 always UNAVAILABLE", "one_dead"), ("1 of 3 always UNAVAILABLE + outlier detection", "one_dead_outlier_detection")]:
    x = r[key]
    print(f"| {label} | {x['calls_per_s']:.0f} | {x['calls_per_s']/h['calls_per_s']:.2f} | {x['errors']} | {x['attempts_per_success']:.2f} | {x['p99_us']/1000:.1f} ms |")
print("\n32 caller threads, 64-byte Echo on /UserService/Echo.")
PY
} | tee "$PARTS/dead.md"

# The Python and Go parts also write their raw rows' runs for the client CPU table, and run those
# rows again in a new process with GF_SYNC_SPIN_US=0 (their tables are the spin-on runs). Python:
# its 8-thread row stays out of the CPU table, which states 1 and 32 threads and asyncio.
echo "== python"
bash bench/python/run.sh --raw-repeat "$CPU_REPEAT" --cpu-json "$CPU/py_on.jsonl"
echo "== python, raw rows with GF_SYNC_SPIN_US=0"
GF_SYNC_SPIN_US=0 GF_LIBRARY=$LIB/libgrpc_failover.so "$VENV/bin/python" bench/python/bench.py \
    --testserver "$LIB/gf-testserver" --seconds "$SECONDS_PER_ROW" --raw-only --raw-repeat "$CPU_REPEAT" \
    --rows sync1,sync32,async --cpu-json "$CPU/py_off.jsonl"
echo "== go"
bash bench/go/run.sh -raw-repeat "$CPU_REPEAT" -cpu-json "$CPU/go_on.jsonl"
echo "== go, raw rows with GF_SYNC_SPIN_US=0"
GF_SYNC_SPIN_US=0 "$LIB/gf-gobench" -testserver "$LIB/gf-testserver" -seconds "$SECONDS_PER_ROW" \
    -raw-only -raw-repeat "$CPU_REPEAT" -cpu-json "$CPU/go_off.jsonl"

echo "== client CPU per call"
{
    echo "## Client CPU per call"
    echo
    echo "User + system CPU time of the client process (getrusage(RUSAGE_SELF): every thread of it, the library's runtime too; the gf-testservers and etcd are other processes) over exactly the measured window of a run, warm-up excluded, divided by the calls completed in it. Spin on is the library's default (\`GF_SYNC_SPIN_US\` unset: a lone blocked caller spins up to 250 µs before it sleeps); off is \`GF_SYNC_SPIN_US=0\`, set for the whole client process (for the in-process Go and Python benchmarks, a second run of the process, the peer measured again in it). calls/s and CPU per call are the medians of the runs; the ratio is ours over its peer's CPU per call, same concurrency and setting. C ABI and tonic: the runs of the C ABI section (spin on) and ${CPU_REPEAT} more of each, taking turns (off), 64-byte Echo. Go binding and grpc-go reference setup: the raw rows of the Go section, ${CPU_REPEAT} runs each, 100-byte Echo over the etcd-resolved three instances. Python binding and grpcio: the raw rows of the Python section, ${CPU_REPEAT} runs each, 100-byte Echo. Each run ${SECONDS_PER_ROW} s."
    echo
    python3 - "$CPU" <<'PY'
import json, os, statistics, sys

cpu_dir = sys.argv[1]


def runs(name):
    path = os.path.join(cpu_dir, name)
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def c_key(r):
    return {"sync": "C ABI", "direct": "tonic"}[r["mode"]], str(r["concurrency"])


def go_key(r):
    return {"grpc-failover": "Go binding", "grpc-go": "grpc-go"}[r["client"]], str(r["concurrency"])


# The Python section's 8-thread row is left out: it has no spin-off runs (to save time).
PY_CONCURRENCY = {"sync1": "1 thread", "sync32": "32 threads", "async": "asyncio, 100 in flight"}


def py_key(r):
    if r["row"] not in PY_CONCURRENCY:
        return None, None
    return {"grpc_failover": "Python binding", "grpcio": "grpcio"}[r["client"]], PY_CONCURRENCY[r["row"]]


# ours, its peer, the highest ratio of CPU per call the target allows, the runs' file prefix, and
# a run's (client, concurrency), client None for a run the table leaves out.
GROUPS = [
    ("C ABI", "tonic", 1.0, "c", c_key),
    ("Go binding", "grpc-go", 0.7, "go", go_key),
    ("Python binding", "grpcio", 0.5, "py", py_key),
]

print("| implementation | concurrency | spin | calls/s | client CPU µs/call | ratio to its peer |")
print("|---|---|---|---|---|---|")
verdicts = []
for ours, peer, target, prefix, key in GROUPS:
    # medians[(client, concurrency, spin)] = (calls/s, CPU µs per call)
    grouped = {}
    for spin in ("on", "off"):
        for r in runs(f"{prefix}_{spin}.jsonl"):
            client, conc = key(r)
            if client:
                grouped.setdefault((client, conc, spin), []).append(r)
    medians = {
        k: (statistics.median(r["calls_per_s"] for r in v), statistics.median(r["cpu_us_per_call"] for r in v))
        for k, v in grouped.items()
    }
    concurrencies = list(dict.fromkeys(c for _, c, _ in grouped))
    ratios = {"on": [], "off": []}
    for conc in concurrencies:
        for spin in ("on", "off"):
            if (ours, conc, spin) not in medians or (peer, conc, spin) not in medians:
                continue
            (o_rate, o_cpu), (p_rate, p_cpu) = medians[(ours, conc, spin)], medians[(peer, conc, spin)]
            ratio = o_cpu / p_cpu
            ratios[spin].append((conc, ratio))
            print(f"| {ours} | {conc} | {spin} | {o_rate:,.0f} | {o_cpu:.1f} | {ratio:.2f}x |")
            print(f"| {peer} | {conc} | {spin} | {p_rate:,.0f} | {p_cpu:.1f} | (peer) |")
    if not ratios["on"]:
        continue
    parts = []
    for spin in ("on", "off"):
        if ratios[spin]:
            ok = all(r <= target for _, r in ratios[spin])
            each = ", ".join(f"{c}: {r:.2f}x" for c, r in ratios[spin])
            parts.append(f"spin {spin} {'met' if ok else 'not met'} ({each})")
    verdicts.append(f"{ours} CPU per call <= {target:.1f}x {peer}'s: {'; '.join(parts)}.")

print()
print("One caller at a paced 500 calls/s (C ABI, `gf_invoke` from one thread sleeping until each call is due), 64-byte Echo; cores used is CPU seconds over wall seconds of the window.")
print()
print("| client | spin | calls/s | client CPU µs/call | cores used |")
print("|---|---|---|---|---|")
paced = {}
for spin in ("on", "off"):
    for r in runs(f"paced_{spin}.jsonl"):
        paced[spin] = r
        print(f"| C ABI, 1 caller at 500 calls/s | {spin} | {r['calls_per_s']:,.0f} | {r['cpu_us_per_call']:.1f} | {r['cores']:.3f} |")
if "on" in paced:
    cores = paced["on"]["cores"]
    off = f"; spin off: {paced['off']['cores']:.3f} core" if "off" in paced else ""
    verdicts.append(f"one caller at 500 calls/s uses < 0.35 core with the default (spin on): {'met' if cores < 0.35 else 'not met'} ({cores:.3f} core){off}.")
print()
for v in verdicts:
    print(f"Target: {v}")
PY
} | tee "$PARTS/cpu.md"

# The plot needs matplotlib: the same venv as the Python benchmark.
# shellcheck source=../bindings/python/venv.sh
. bindings/python/venv.sh
"$VENV/bin/python" -c 'import matplotlib' 2>/dev/null || gf_python_venv "$VENV" matplotlib
"$VENV/bin/python" bench/report.py
