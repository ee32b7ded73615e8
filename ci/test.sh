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

echo "== NVRTC (compile checks of kernels/*.cu)"
nvrtc_lib="$(bash ci/setup-nvrtc.sh | tail -n 1)"
export LD_LIBRARY_PATH="$nvrtc_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# The kernel compile test fails, rather than skips, if NVRTC cannot be loaded.
export RASK_REQUIRE_NVRTC=1

echo "== build"
cargo build --workspace --all-targets --locked

echo "== the README's commands resolve (cargo run picks the rask binary)"
cargo run -q --locked -- info >/dev/null

echo "== tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --locked --no-fail-fast
else
    cargo test --workspace --locked --no-fail-fast
fi
