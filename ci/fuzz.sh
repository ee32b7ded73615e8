#!/usr/bin/env bash
# Coverage-guided fuzzing of every decoder and handler reached from the network (fuzz/,
# its own workspace). libFuzzer, linked by the libfuzzer-sys crate (built from source with
# the system's C++ compiler), with LLVM's SanitizerCoverage passes run by the stable
# compiler: no nightly toolchain and no fuzzing tool to install. The flags are those
# `cargo fuzz build --sanitizer none` passes.
#
#   bash ci/fuzz.sh                  replay the corpus, then run every target for a share
#                                    of RASK_FUZZ_BUDGET seconds (270: about 5 minutes in
#                                    all, the targets side by side on the machine's cores)
#   bash ci/fuzz.sh --long           a campaign: an hour per target (--time S to change),
#                                    its corpus kept in fuzz/campaign/ across runs
#   bash ci/fuzz.sh --long --merge   ... then add the inputs that reach new coverage to
#                                    fuzz/corpus/ (to commit)
#   bash ci/fuzz.sh TARGET...        only these targets (names as in fuzz/fuzz_targets/)
#
# Fails on any crash: the input is saved in fuzz/artifacts/<target>/ and printed in hex.
# Prints executions, executions per second and coverage per target, and writes them to
# fuzz/artifacts/summary.tsv.
set -euo pipefail
cd "$(dirname "$0")/.."

long=0
merge=0
per_target=""
jobs="$(nproc 2>/dev/null || echo 2)"
targets=()
while [ $# -gt 0 ]; do
    case "$1" in
        --long) long=1 ;;
        --merge) merge=1 ;;
        --time) per_target="$2"; shift ;;
        --jobs) jobs="$2"; shift ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        -*) echo "unknown option $1" >&2; exit 2 ;;
        *) targets+=("$1") ;;
    esac
    shift
done

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install a Rust toolchain (rustup) first" >&2
    exit 1
fi
manifest=fuzz/Cargo.toml
# The corpus replayed through the same harnesses, without the fuzzer (needs nothing more).
echo "== fuzz: replay of the corpus (fuzz/corpus, no fuzzer)"
cargo test --manifest-path "$manifest" --locked --no-default-features -q

# libfuzzer-sys compiles libFuzzer (C++).
if ! command -v c++ >/dev/null 2>&1 && ! command -v g++ >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "fuzz: installing g++ (libFuzzer is C++)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq && apt-get install -y -qq --no-install-recommends g++ >/dev/null
    else
        echo "fuzz: a C++ compiler is needed to build libFuzzer (install g++)" >&2
        exit 1
    fi
fi

if [ "${#targets[@]}" -eq 0 ]; then
    for f in fuzz/fuzz_targets/*.rs; do
        targets+=("$(basename "$f" .rs)")
    done
fi

echo "== fuzz: build (libFuzzer, SanitizerCoverage, debug assertions)"
triple="$(rustc -vV | sed -n 's/^host: //p')"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares -Cllvm-args=-sanitizer-coverage-stack-depth \
--cfg fuzzing -Cdebug-assertions"
# Built for an explicit target so that these flags reach the fuzzed code only, not build
# scripts and proc macros (as cargo-fuzz does).
cargo build --manifest-path "$manifest" --locked --release --target "$triple" --bins
unset RUSTFLAGS
bin_dir="${CARGO_TARGET_DIR:-fuzz/target}/$triple/release"

n="${#targets[@]}"
if [ -z "$per_target" ]; then
    if [ "$long" -eq 1 ]; then
        per_target=3600
    else
        budget="${RASK_FUZZ_BUDGET:-270}"
        # Targets run `jobs` at a time, in ceil(n / jobs) rounds sharing the budget.
        per_target=$(( budget / ((n + jobs - 1) / jobs) ))
        [ "$per_target" -lt 5 ] && per_target=5
    fi
fi
if [ "$long" -eq 1 ]; then
    work=fuzz/campaign
else
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
fi
artifacts=fuzz/artifacts
mkdir -p "$artifacts"
echo "== fuzz: ${n} targets, ${per_target} s each, ${jobs} at a time"

run_one() {
    local t="$1" corpus="$work/corpus/$1" log="$work/$1.log"
    mkdir -p "$corpus" "$artifacts/$t"
    cp -n fuzz/corpus/"$t"/* "$corpus"/ 2>/dev/null || true
    touch "$work/$t.start"
    # -timeout: an input slower than 10 s is a finding (a hang); -rss_limit_mb: memory
    # beyond the per-input allocation bound the harnesses check themselves.
    local rc=0
    "$bin_dir/$t" "$corpus" -max_total_time="$per_target" -timeout=10 -rss_limit_mb=2048 \
        -max_len=131072 -print_final_stats=1 -artifact_prefix="$artifacts/$t/" \
        >"$log" 2>&1 || rc=$?
    echo "$rc" >"$work/$t.rc"
}

status=0
pids=()
names=()
for t in "${targets[@]}"; do
    if [ ! -x "$bin_dir/$t" ]; then
        echo "no fuzz target $t" >&2
        exit 2
    fi
    run_one "$t" &
    pids+=("$!")
    names+=("$t")
    if [ "${#pids[@]}" -ge "$jobs" ]; then
        wait "${pids[0]}" || true
        pids=("${pids[@]:1}")
    fi
done
for p in "${pids[@]}"; do wait "$p" || true; done

summary="$artifacts/summary.tsv"
printf 'target\tseconds\texecutions\texec_per_s\tcov_edges\tfeatures\tcorpus\n' >"$summary"
printf '%-16s %10s %12s %10s %8s %8s %7s\n' target seconds executions exec/s edges features corpus
for t in "${names[@]}"; do
    log="$work/$t.log"
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)"
    rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n 1)"
    last="$(grep -E '^#[0-9]+' "$log" | grep -E 'cov: ' | tail -n 1 || true)"
    cov="$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")"
    ft="$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")"
    corp="$(sed -n 's/.* corp: \([0-9]*\).*/\1/p' <<<"$last")"
    printf '%-16s %10s %12s %10s %8s %8s %7s\n' "$t" "$per_target" "${execs:-?}" "${rate:-?}" \
        "${cov:-?}" "${ft:-?}" "${corp:-?}"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$per_target" "${execs:-}" "${rate:-}" \
        "${cov:-}" "${ft:-}" "${corp:-}" >>"$summary"
    rc="$(cat "$work/$t.rc" 2>/dev/null || echo 1)"
    if [ "$rc" -ne 0 ]; then
        status=1
        echo "---- $t: CRASH (exit status $rc)"
        grep -E 'panicked at|allocation bound|ERROR: libFuzzer|SUMMARY' -A3 "$log" | head -n 20 || true
        for f in $(find "$artifacts/$t" -type f -newer "$work/$t.start" | sort); do
            echo "input saved as $f ($(wc -c <"$f") bytes), in hex:"
            od -A x -t x1 -v "$f" | head -n 4096
        done
    fi
done

if [ "$long" -eq 1 ] && [ "$merge" -eq 1 ]; then
    echo "== fuzz: merging inputs with new coverage into fuzz/corpus/"
    for t in "${names[@]}"; do
        "$bin_dir/$t" -merge=1 -max_len=131072 "fuzz/corpus/$t" "$work/corpus/$t" \
            >"$work/$t.merge.log" 2>&1 || { status=1; tail -n 5 "$work/$t.merge.log"; }
    done
fi

if [ "$status" -ne 0 ]; then
    echo "fuzz: FAILED (crashing inputs above; replay one with $bin_dir/<target> <file>)"
else
    echo "fuzz: no crash in ${n} targets"
fi
exit "$status"
