#!/usr/bin/env bash
# Installs NVRTC from PyPI into a local venv (once) and prints the directory holding
# libnvrtc.so.13 on its last line. NVRTC is pinned to the CUDA 13.0 generation, whose PTX
# drivers of that generation accept. Used by ci/test.sh to compile-check crates/kernels/cuda/*.cu.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${RASK_NVRTC_VENV:-target/nvrtc-venv}"
pin="nvidia-cuda-nvrtc==13.0.88"
find_lib() { find "$venv" -name 'libnvrtc.so.13' -printf '%h\n' 2>/dev/null | head -n 1; }
if [ -z "$(find_lib)" ]; then
    if ! python3 -m venv "$venv" >&2 2>/dev/null; then
        # Debian splits venv support out of python3.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "installing python3-venv" >&2
            apt-get update -qq >&2 && apt-get install -y -qq python3-venv >&2
            rm -rf "$venv"
            python3 -m venv "$venv" >&2
        else
            echo "python3 -m venv failed; install python3-venv" >&2
            exit 1
        fi
    fi
    "$venv/bin/pip" install -q --disable-pip-version-check "$pin" >&2
fi
lib="$(find_lib)"
if [ -z "$lib" ]; then
    echo "libnvrtc.so.13 not found in $venv after installing $pin" >&2
    exit 1
fi
(cd "$lib" && pwd)
