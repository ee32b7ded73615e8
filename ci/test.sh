#!/usr/bin/env bash
# The project's test command (the README's second quickstart command). Installs what it
# needs, checks the crate dependency rule, builds everything and runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install a Rust toolchain (rustup) first" >&2
    exit 1
fi

echo "== dependency rule"
bash ci/check-deps.sh

echo "== NVRTC (compile checks of crates/kernels/cuda/*.cu)"
nvrtc_lib="$(bash ci/setup-nvrtc.sh | tail -n 1)"
export LD_LIBRARY_PATH="$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The kernel compile test fails, rather than skips, if NVRTC cannot be loaded.
export RASK_REQUIRE_NVRTC=1

echo "== daemons the deployment tests start (sshd, Slurm, munge)"
bash ci/setup-daemons.sh
# Where the daemons could be installed, a deployment test that cannot start them fails
# with the reason instead of skipping.
if [ "$(id -u)" -eq 0 ]; then
    export RASK_REQUIRE_DAEMONS=1
fi

# One build of the tests (the profile nextest and the doc tests use), not a second one of
# every test target under `cargo build --all-targets`; no incremental state to keep.
export CARGO_INCREMENTAL=0
echo "== build"
cargo build --workspace --locked
cargo test --workspace --no-run --locked

echo "== docs (every crate's, warnings are errors)"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --locked

echo "== the README's commands resolve (cargo run picks the rask binary)"
cargo run -q --locked -- info >/dev/null

# A test that cannot run here (no GPU, no CUDA driver, no root for a network namespace …)
# passes after printing a line that starts with SKIPPED and gives the reason. Passing
# tests' output is kept in a log, not shown, and those lines are listed at the end, so a
# skip is not mistaken for a pass.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# Shows nextest's output without the output of passing tests (printed after the summary
# with --success-output final).
hide_passing_output() {
    awk '
        /^ *Summary \[/ { after = 1 }
        after && /^ *[A-Z]+ +\[/ { hide = ($1 == "PASS") }
        !hide { print; fflush() }
    '
}

# Lists the tests that passed without running their checks, with the reasons they gave,
# and the ignored ones.
skipped_summary() {
    awk '
        function add(line) { if (!(line in seen)) { seen[line] = 1; out[n++] = line } }
        # Whose output follows: a nextest status line, or a libtest --show-output header
        # (of a passing test).
        /^ *[A-Z]+ +\[/ {
            test = ""
            name = $0
            sub(/^ *[A-Z]+ +\[[^]]*\] +(\([^)]*\) +)?/, "", name)
            if ($1 == "PASS") test = name
            if ($1 == "SKIP") add(name ": ignored (#[ignore]; run only on request)")
            next
        }
        /^successes:$/ { passed = 1 }
        /^failures:$/ { passed = 0 }
        /^---- .* stdout ----$/ { test = passed ? $2 : ""; next }
        /^test .* \.\.\. ignored/ {
            reason = $0
            sub(/^test .* \.\.\. ignored,? */, "", reason)
            add($2 ": ignored" (reason == "" ? "" : " (" reason ")"))
        }
        /^ *SKIPPED/ && test != "" {
            reason = $0
            sub(/^ *SKIPPED:? */, "", reason)
            if (reason ~ /^\([^)]*\)/) {
                close_at = index(reason, ")")
                rest = substr(reason, close_at + 1)
                sub(/^:? */, "", rest)
                reason = substr(reason, 2, close_at - 2) (rest == "" ? "" : ": " rest)
            }
            add(test ": " reason)
        }
        END {
            if (n == 0) { print "== skipped (not run here): none"; exit }
            print "== skipped (not run here): " n " tests passed or were left out without running their checks"
            for (i = 0; i < n; i++) print "  " out[i]
        }
    ' "$1"
}

echo "== Kubernetes manifests, validated offline (there is no API server here)"
bash crates/deploy/validate-k8s.sh

echo "== tests"
status=0
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast --status-level skip \
        --success-output final --no-output-indent 2>&1 |
        tee "$log" | hide_passing_output || status=$?
else
    cargo test --workspace --locked --no-fail-fast -- --show-output 2>&1 | tee "$log" ||
        status=$?
fi

# nextest does not run doc tests (the compile_fail examples among them).
echo "== doc tests"
cargo test --workspace --doc --locked --no-fail-fast || status=$?

bash ci/fuzz.sh || status=$?

skipped_summary "$log"
exit "$status"
