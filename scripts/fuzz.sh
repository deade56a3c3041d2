#!/usr/bin/env bash
# Runs the fuzz targets in fuzz/ (see fuzz/README.md): `make fuzz` and `make test-fuzz`.
#
#   scripts/fuzz.sh [TARGET...]      each target for FUZZ_SECONDS (default 60) under libFuzzer
#                                    with ASan (cargo +nightly fuzz), new inputs kept in
#                                    fuzz/corpus/TARGET; crashes in fuzz/artifacts/TARGET
#   scripts/fuzz.sh --smoke [TARGET...]
#                                    the same for FUZZ_SECONDS (default 10) each; without a
#                                    nightly toolchain or cargo-fuzz, replays the seeds and the
#                                    corpus through the stable build of the same targets instead
#
# Environment: FUZZ_SECONDS, FUZZ_RUNS (stop a target after this many inputs, if sooner),
# FUZZ_TARGETS (default: all), FUZZ_JOBS (parallel libFuzzer jobs
# per target, default 1), GF_TESTSERVER (abi_sequence's servers; default
# target/release/gf-testserver). Prints one line per target: inputs executed, crashes.
# Exits non-zero if any target found a crash, a leak, a timeout or a failed assertion.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FUZZ="$ROOT/fuzz"
smoke=0
if [ "${1:-}" = --smoke ]; then
    smoke=1
    shift
fi
ALL=(options etcd_record target metadata abi_sequence)
if [ $# -gt 0 ]; then
    targets=("$@")
else
    # shellcheck disable=SC2206 # a space-separated list on purpose
    targets=(${FUZZ_TARGETS:-${ALL[*]}})
fi
if [ $smoke = 1 ]; then seconds="${FUZZ_SECONDS:-10}"; else seconds="${FUZZ_SECONDS:-60}"; fi
export GF_TESTSERVER="${GF_TESTSERVER:-$ROOT/target/release/gf-testserver}"
[ -x "$GF_TESTSERVER" ] || echo "fuzz: $GF_TESTSERVER is missing; abi_sequence runs against closed ports only" >&2

have_libfuzzer() {
    cargo +nightly --version >/dev/null 2>&1 && cargo +nightly fuzz --version >/dev/null 2>&1
}

failed=()
if ! have_libfuzzer; then
    if [ $smoke = 0 ]; then
        echo "fuzz: needs a nightly toolchain and cargo-fuzz (make deps installs cargo-fuzz when nightly is there)" >&2
        exit 1
    fi
    echo "fuzz: no nightly toolchain or cargo-fuzz; replaying seeds and corpus on stable instead"
    (cd "$FUZZ" && cargo build --release --quiet --bins) || exit 1
    for t in "${targets[@]}"; do
        dirs=("$FUZZ/seeds/$t")
        [ -d "$FUZZ/corpus/$t" ] && dirs+=("$FUZZ/corpus/$t")
        if "$FUZZ/target/release/$t" "${dirs[@]}" 2>/dev/null; then :; else failed+=("$t"); fi
    done
else
    # -O: optimised like the library ships; -a: debug assertions on, so that an overflow or a
    # broken unsafe precondition is a finding too.
    (cd "$FUZZ" && cargo +nightly fuzz build -O -a) || exit 1
    # libFuzzer forks and logs each job to a file of its own even for -jobs=1: only ask for >1.
    jobs=()
    if [ "${FUZZ_JOBS:-1}" -gt 1 ]; then jobs=(-jobs="$FUZZ_JOBS" -workers="$FUZZ_JOBS"); fi
    for t in "${targets[@]}"; do
        mkdir -p "$FUZZ/corpus/$t" "$FUZZ/artifacts/$t"
        log="$FUZZ/artifacts/$t/last-run.log"
        # abi_sequence connects and calls for real: an input may take seconds, not more.
        case "$t" in abi_sequence) per_input=60 ;; *) per_input=10 ;; esac
        t0=$SECONDS
        # Artifacts newer than this stamp are this run's (the log itself is written to the end).
        stamp="$FUZZ/artifacts/$t/.started"
        touch "$stamp"
        (cd "$FUZZ" && cargo +nightly fuzz run -O -a "$t" "corpus/$t" "seeds/$t" -- \
            -max_total_time="$seconds" -runs="${FUZZ_RUNS:--1}" -timeout="$per_input" \
            -print_final_stats=1 "${jobs[@]}" \
            -artifact_prefix="$FUZZ/artifacts/$t/") >"$log" 2>&1
        rc=$?
        # Parallel jobs each log to fuzz/fuzz-N.log: keep them in $log too.
        cat "$FUZZ"/fuzz-*.log >>"$log" 2>/dev/null
        rm -f "$FUZZ"/fuzz-*.log
        execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" |
            awk '{s+=$1} END {print s+0}')
        crashes=$(find "$FUZZ/artifacts/$t" -newer "$stamp" \( -name 'crash-*' -o -name 'leak-*' \
            -o -name 'timeout-*' -o -name 'oom-*' \) | wc -l)
        if [ $rc -ne 0 ] && [ "$crashes" -eq 0 ]; then crashes=1; fi
        corpus=$(find "$FUZZ/corpus/$t" -type f | wc -l)
        printf 'fuzz %-12s %10d inputs in %4d s, %d crashes, corpus %d files\n' \
            "$t" "$execs" $((SECONDS - t0)) "$crashes" "$corpus"
        if [ $rc -ne 0 ]; then
            failed+=("$t")
            grep -E 'panicked|ERROR:|SUMMARY|Test unit written' "$log" | head -20
            echo "fuzz: $t failed; full log: $log"
        fi
    done
fi

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: FAILED: ${failed[*]}"
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, no crash"
