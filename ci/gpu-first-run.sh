#!/usr/bin/env bash
# The first run of Rask's CUDA path on a machine with an NVIDIA GPU: what to run, in order,
# in about ten minutes (most of it the release build). Every step prints what it checks;
# the first that fails stops the script with a line `FAIL: <step>: <why>`.
#
#   bash ci/gpu-first-run.sh
#
# Part 1 (one GPU): the driver, NVRTC and cuBLAS 13 from PyPI, the release build, `rask
# info`, the GPU tests with RASK_REQUIRE_GPU=1 (CUDA IPC to a child process among them), a
# scheduler + cuda-worker running examples/matmul against a CPU run of the same, and a
# spill run under a small --device-memory-limit.
# Part 2 (two GPUs or more): NVLink topology against `nvidia-smi topo -m`, one worker per
# GPU UUID, values crossing GPUs between two workers' processes (CUDA IPC, over NVLink
# where there is one), and CUDA_VISIBLE_DEVICES respected.
#
# Every process it starts is stopped, by its pid, when it exits. Without a GPU it prints
# one line saying so and exits with status 2.
set -Eeuo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvidia-smi >/dev/null 2>&1; then
    echo "gpu-first-run: no NVIDIA GPU here (nvidia-smi not found); run this on a machine with one" >&2
    exit 2
fi
# Bash alone from here to the verdict: a broken machine gets one line, not several.
gpu_re=$'(^|\n)GPU [0-9]'
if ! gpu_list="$(nvidia-smi -L 2>&1)" || ! [[ "$gpu_list" =~ $gpu_re ]]; then
    echo "gpu-first-run: no NVIDIA GPU here (nvidia-smi -L: ${gpu_list%%$'\n'*}); run this on a machine with one" >&2
    exit 2
fi

current="start"
step() {
    current="$1"
    echo
    echo "== $1"
}
fail() {
    echo "FAIL: $current: $*" >&2
    exit 1
}
trap 'echo "FAIL: $current: command failed (line $LINENO): $BASH_COMMAND" >&2' ERR

work="$(mktemp -d)"
pids=()
stop_all() {
    local p
    for p in "${pids[@]}"; do
        kill -TERM "$p" 2>/dev/null || true
    done
    for p in "${pids[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$p" 2>/dev/null || true
    done
    rm -rf "$work"
}
trap stop_all EXIT

release="${CARGO_TARGET_DIR:-target}/release"
rask="$release/rask"
cuda_worker="$release/cuda-worker"
matmul="$release/examples/matmul"

# Starts a background process with its output in $work/NAME.log; its pid is in $last_pid.
start() {
    local name="$1"
    shift
    "$@" >"$work/$name.log" 2>&1 &
    last_pid=$!
    pids+=("$last_pid")
}

# Stops one process started by `start`, by pid, and waits for it.
stop() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# Starts a scheduler on a free port; its address is in $addr.
start_scheduler() {
    rm -f "$work/scheduler.addr"
    start scheduler "$rask" scheduler --port 0 --scheduler-file "$work/scheduler.addr"
    scheduler_pid=$last_pid
    for _ in $(seq 100); do
        [ -s "$work/scheduler.addr" ] && break
        sleep 0.1
    done
    [ -s "$work/scheduler.addr" ] || fail "the scheduler wrote no address: $(tail -n 5 "$work/scheduler.log")"
    addr="$(cat "$work/scheduler.addr")"
    echo "scheduler at $addr"
}

# The scheduler's workers, one line each (see `rask info --scheduler`).
workers() {
    "$rask" info --scheduler "$addr" | grep '^worker ' || true
}

# Waits until N workers have joined; fails with cuda-worker's log otherwise.
wait_workers() {
    local n="$1" log="$2"
    for _ in $(seq 120); do
        [ "$(workers | wc -l)" -ge "$n" ] && return 0
        sleep 0.5
    done
    fail "$(workers | wc -l) of $n workers joined; cuda-worker said: $(tail -n 20 "$work/$log.log")"
}

# A worker line's field KEY (`ran`, `spilled`, `received` …), summed over NAME:VALUE
# entries whose NAME matches PATTERN.
field_sum() {
    awk -v key="$1" -v pat="$2" '{
        for (i = 1; i <= NF; i++) if (index($i, key "=") == 1) {
            n = split(substr($i, length(key) + 2), parts, ",")
            for (j = 1; j <= n; j++) {
                k = parts[j]; sub(/:[0-9]+$/, "", k)
                v = parts[j]; sub(/^.*:/, "", v)
                if (k ~ pat) s += v
            }
        }
    } END { print s + 0 }'
}

# The sum examples/matmul printed (the number after the last ": " of its first line).
matmul_sum() {
    head -n 1 "$1" | sed 's/.*: //'
}

# Fails unless the sums in files $1 and $2 agree to a relative 1e-3 (f32, summed in
# another order on the GPU).
same_sum() {
    local a b
    a="$(matmul_sum "$1")"
    b="$(matmul_sum "$2")"
    echo "sum: $a (GPU) vs $b (CPU)"
    awk -v a="$a" -v b="$b" 'BEGIN { d = a - b; if (d < 0) d = -d; m = b < 0 ? -b : b;
        exit !(m > 0 && d / m < 1e-3) }' || fail "the GPU's sum $a is not the CPU's $b"
}

N=4096
CHUNK=1024

# ---------------------------------------------------------------------- part 1: one GPU

step "nvidia-smi: the GPUs and the driver"
nvidia-smi --query-gpu=index,name,uuid,memory.total,pci.bus_id,driver_version,mig.mode.current \
    --format=csv,noheader | tee "$work/gpus.csv"
n_gpus="$(wc -l <"$work/gpus.csv")"
driver="$(head -n 1 "$work/gpus.csv" | awk -F', ' '{ print $6 }')"
echo "$n_gpus GPUs, driver $driver"
# NVRTC 13.0's PTX is accepted by drivers of the CUDA 13.0 generation (580) or newer.
[ "${driver%%.*}" -ge 580 ] || fail "driver $driver is older than 580: it refuses CUDA 13's PTX"
gpu_name="$(head -n 1 "$work/gpus.csv" | awk -F', ' '{ print $2 }')"

step "NVRTC and cuBLAS 13 from PyPI into a venv"
nvrtc_lib="$(bash ci/setup-nvrtc.sh | tail -n 1)"
venv="${RASK_NVRTC_VENV:-target/nvrtc-venv}"
"$venv/bin/pip" install -q --disable-pip-version-check "nvidia-cublas==13.0.2.14" >&2
cublas_lib="$(find "$venv" -name 'libcublas.so.13' -printf '%h\n' | head -n 1)"
[ -n "$cublas_lib" ] || fail "libcublas.so.13 not found in $venv after installing nvidia-cublas"
cublas_lib="$(cd "$cublas_lib" && pwd)"
export LD_LIBRARY_PATH="$nvrtc_lib:$cublas_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
echo "NVRTC in $nvrtc_lib, cuBLAS in $cublas_lib"

step "cargo build --release"
cargo build --release --locked --bins --example matmul

step "rask info: NVML sees the GPUs, the CUDA driver loads"
"$rask" info | tee "$work/info.txt"
rask_gpus="$(grep -c '^gpu [0-9]*:' "$work/info.txt" || true)"
[ "$rask_gpus" -eq "$n_gpus" ] || fail "rask info lists $rask_gpus GPUs, nvidia-smi $n_gpus"
grep -q '^cuda: driver loaded' "$work/info.txt" || fail "$(grep '^cuda:' "$work/info.txt")"

step "GPU tests with RASK_REQUIRE_GPU=1 (CUDA IPC to a child process among them)"
RASK_REQUIRE_GPU=1 RASK_REQUIRE_NVRTC=1 cargo test --release --locked -p rask-kernels \
    --test gpu --test nvrtc -- --test-threads=1 2>&1 | tee "$work/gpu-tests.txt"
grep -q '^test values_cross_processes_by_cuda_ipc \.\.\. ok' "$work/gpu-tests.txt" ||
    fail "values_cross_processes_by_cuda_ipc did not pass"
# Only the no-driver tests may skip here (they check the machines without a GPU).
if grep 'SKIPPED' "$work/gpu-tests.txt" | grep -qv 'a CUDA driver is present'; then
    fail "a GPU test skipped: $(grep SKIPPED "$work/gpu-tests.txt" | grep -v 'a CUDA driver is present' | head -n 1)"
fi

step "examples/matmul on the CPU (the reference)"
env -u RASK_SCHEDULER_ADDRESS "$matmul" "$N" "$CHUNK" | tee "$work/matmul-cpu.txt"

step "a scheduler and cuda-worker: examples/matmul on GPU 0 against the CPU's result"
start_scheduler
start cw1 env CUDA_VISIBLE_DEVICES=0 "$cuda_worker" "$addr" --name first
cw=$last_pid
wait_workers 1 cw1
workers
workers | grep -q "device=cuda:0 " || fail "the worker does not drive cuda:0: $(workers)"
workers | grep -qF "device_name=\"$gpu_name" || fail "the worker's device is not $gpu_name: $(workers)"
RASK_SCHEDULER_ADDRESS="$addr" "$matmul" "$N" "$CHUNK" | tee "$work/matmul-gpu.txt"
same_sum "$work/matmul-gpu.txt" "$work/matmul-cpu.txt"
on_gpu="$(workers | field_sum ran '^device$')"
echo "tasks run by the GPU's kernels: $on_gpu"
[ "$on_gpu" -gt 0 ] || fail "no task ran on the GPU: $(workers)"
stop "$cw"
stop "$scheduler_pid"

step "spilling: the same matmul under --device-memory-limit 32MiB"
start_scheduler
start cw-spill env CUDA_VISIBLE_DEVICES=0 "$cuda_worker" "$addr" --name spill --device-memory-limit 32MiB
cw=$last_pid
wait_workers 1 cw-spill
RASK_SCHEDULER_ADDRESS="$addr" "$matmul" "$N" "$CHUNK" | tee "$work/matmul-spill.txt"
same_sum "$work/matmul-spill.txt" "$work/matmul-cpu.txt"
workers
spilled="$(workers | field_sum spilled '^device->')"
echo "bytes spilled from the GPU: $spilled"
[ "$spilled" -gt 0 ] || fail "nothing was spilled from the GPU under a 32 MiB limit"
stop "$cw"
stop "$scheduler_pid"

if [ "$n_gpus" -lt 2 ]; then
    echo
    echo "== part 1 passed; part 2 needs two GPUs or more (this machine has $n_gpus)"
    exit 0
fi

# ------------------------------------------------------------------- part 2: two GPUs+

step "topology: rask's NVLink peers against nvidia-smi topo -m"
nvidia-smi topo -m | sed 's/\x1b\[[0-9;]*m//g' | tee "$work/topo.txt"
for ((i = 0; i < n_gpus; i++)); do
    # nvidia-smi's NV# entries on GPU i's row, as the GPU indices they are in.
    want="$(awk -v row="GPU$i" '
        NR == 1 { for (c = 1; c <= NF; c++) if ($c ~ /^GPU[0-9]+$/) col[c + 1] = substr($c, 4) }
        NR > 1 && $1 == row { s = ""; for (c = 2; c <= NF; c++) if ((c in col) && $c ~ /^NV[0-9]+$/) s = s (s == "" ? "" : ", ") col[c]; print s }
    ' "$work/topo.txt")"
    got="$(sed -n "s/^gpu $i: .*NVLink to \[\(.*\)\])\$/\1/p" "$work/info.txt")"
    echo "GPU $i: NVLink to [$got] (rask), [$want] (nvidia-smi)"
    [ "$got" = "$want" ] || fail "GPU $i's NVLink peers: rask [$got], nvidia-smi [$want]"
done

step "one worker per GPU UUID (one per MIG instance on a GPU in MIG mode)"
# A GPU's UUID, or its MIG instances' when it has any.
awk '/^GPU [0-9]/ { if (g != "" && !mig) print g; match($0, /GPU-[0-9a-f-]+/); g = substr($0, RSTART, RLENGTH); mig = 0 }
     /^ +MIG / { match($0, /MIG-[0-9a-f-]+/); print substr($0, RSTART, RLENGTH); mig = 1 }
     END { if (g != "" && !mig) print g }' <<<"$gpu_list" >"$work/uuids.txt"
n_devices="$(wc -l <"$work/uuids.txt")"
start_scheduler
start cw-all env -u CUDA_VISIBLE_DEVICES "$cuda_worker" "$addr" --name all
cw=$last_pid
wait_workers "$n_devices" cw-all
workers
[ "$(workers | wc -l)" -eq "$n_devices" ] || fail "$(workers | wc -l) workers for $n_devices devices"
while read -r uuid; do
    grep -qF "($uuid," "$work/cw-all.log" || fail "no worker planned for $uuid: $(cat "$work/cw-all.log")"
done <"$work/uuids.txt"
stop "$cw"
stop "$scheduler_pid"

step "values cross GPUs between two workers' processes (CUDA IPC, NVLink where there is one)"
# First the IPC test with its importing child on the other GPU (each process sees only its
# own, as two workers do), then two cuda-worker workers, one per GPU UUID.
if grep -q 'Enabled' <(head -n 2 "$work/gpus.csv"); then
    echo "GPU 0 or 1 is in MIG mode: CUDA IPC is not supported between MIG instances; not checked"
else
    CUDA_VISIBLE_DEVICES=0 RASK_IPC_CHILD_DEVICES=1 RASK_REQUIRE_GPU=1 \
        cargo test --release --locked -p rask-kernels --test gpu -- --exact \
        values_cross_processes_by_cuda_ipc --nocapture 2>&1 | tee "$work/ipc-two-gpus.txt"
    grep -q 'the importing child sees CUDA_VISIBLE_DEVICES=1' "$work/ipc-two-gpus.txt" ||
        fail "the IPC test's child was not given the other GPU"
    grep -q '^test values_cross_processes_by_cuda_ipc \.\.\. ok' "$work/ipc-two-gpus.txt" ||
        fail "CUDA IPC from GPU 0 to a process on GPU 1 failed"
    start_scheduler
    start cw-ipc env CUDA_VISIBLE_DEVICES=0,1 "$cuda_worker" "$addr" --name ipc --transport shm
    cw=$last_pid
    wait_workers 2 cw-ipc
    RASK_SCHEDULER_ADDRESS="$addr" "$matmul" "$N" "$CHUNK" | tee "$work/matmul-ipc.txt"
    same_sum "$work/matmul-ipc.txt" "$work/matmul-cpu.txt"
    workers
    if grep -q 'cannot import device memory' "$work/cw-ipc.log"; then
        fail "a worker could not import its peer's GPU memory: $(grep -m 1 'cannot import device memory' "$work/cw-ipc.log")"
    fi
    peers="$(sed -n 's/^gpu 0: .*NVLink to \[\(.*\)\])$/\1/p' "$work/info.txt")"
    if [[ ", $peers, " == *", 1, "* ]]; then class='^nvlink$'; else class='^pcie$'; fi
    crossed="$(workers | field_sum received "$class")"
    echo "bytes received from the other GPU's worker (${class//[\^\$]/}): $crossed"
    [ "$crossed" -gt 0 ] || fail "no bytes crossed between the GPUs over ${class//[\^\$]/}: $(workers)"
    stop "$cw"
    stop "$scheduler_pid"
fi

step "CUDA_VISIBLE_DEVICES respected: cuda-worker given GPU 1 only"
uuid1="$(awk -F', ' 'NR == 2 { print $3 }' "$work/gpus.csv")"
start_scheduler
start cw-one env CUDA_VISIBLE_DEVICES="$uuid1" "$cuda_worker" "$addr" --name one
cw=$last_pid
wait_workers 1 cw-one
workers
# cuda-worker planned its workers before starting any: exactly one, for GPU 1.
planned="$(grep -c 'rask.cuda-worker - INFO - GPU ' "$work/cw-one.log" || true)"
[ "$planned" -eq 1 ] || fail "cuda-worker planned $planned workers for one visible GPU"
grep -qF "($uuid1," "$work/cw-one.log" || fail "the worker planned is not GPU 1's: $(cat "$work/cw-one.log")"
[ "$(workers | grep -c '^worker one-gpu1')" -eq "$(workers | wc -l)" ] ||
    fail "workers other than GPU 1's joined: $(workers)"
stop "$cw"
stop "$scheduler_pid"

echo
echo "== parts 1 and 2 passed on $n_gpus GPUs"
