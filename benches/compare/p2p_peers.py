"""Point-to-point bandwidth of reference peers, for comparison with Rask.

Measures, on this machine and over loopback only, the bandwidth that other
tools reach when moving a buffer of each size from one place to another, so
`rask-bench p2p` can print them next to Rask's figures:

  memcpy   single-thread memcpy of each size in one process (a C program
           compiled on the fly with `cc -O2`); the ceiling for any copy.
  ucx_shm  `ucx_perftest -t tag_bw` between two processes, UCX_TLS=posix,self
           (shared memory).
  ucx_tcp  the same with UCX_TLS=tcp,self on the loopback device.
  iperf3   one TCP stream over 127.0.0.1 for 5 s (size-independent).
  dask     a numpy array moved from one worker to the other on a two-worker
           Dask LocalCluster (benches/compare/dask_p2p.py, run with the venv
           python from setup_venv.sh).

Figures are GB/s with 1 GB = 1e9 bytes, medians over --runs runs. Missing
tools (ucx_perftest, iperf3) are installed with apt-get when running as
root; a peer that cannot run is reported under "skipped" with the reason.
Runs with the system python3 and needs only the standard library.

    python3 benches/compare/p2p_peers.py --sizes 1MiB,64MiB --runs 3 --json out.json
"""

import argparse
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

PEERS = ["memcpy", "ucx_shm", "ucx_tcp", "iperf3", "dask"]
DEFAULT_SIZES = "1MiB,16MiB,256MiB,1GiB"
UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}

HERE = os.path.dirname(os.path.abspath(__file__))

# Upper bound on any one child process (a whole benchmark run or server);
# nothing should hang for longer than this.
PROCESS_TIMEOUT_S = 120.0
# apt-get and the venv setup download packages, so they get longer.
INSTALL_TIMEOUT_S = 300.0
# How long a server may take to start listening.
LISTEN_TIMEOUT_S = 15.0

# ucx_perftest: the iteration count of each size is chosen so that one
# measurement lasts about UCX_TARGET_S, from a short calibration run whose
# iteration count comes from a guessed bandwidth (GB/s) per transport.
UCX_TARGET_S = 1.0
UCX_CALIBRATION_S = 0.25
UCX_GUESS_GB_PER_S = {"ucx_shm": 10.0, "ucx_tcp": 3.0}
UCX_MAX_ITERS = 1_000_000
UCX_TLS = {"ucx_shm": "posix,self", "ucx_tcp": "tcp,self"}

IPERF3_SECONDS = 5

MEMCPY_C = r"""
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* usage: memcpy_bw SIZE RUNS
 * Prints one line per run: the seconds one memcpy of SIZE bytes took,
 * averaged over the copies of that run (about 1 GiB is copied per run, so
 * small sizes are repeated many times and large ones once). */
int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s SIZE RUNS\n", argv[0]);
        return 2;
    }
    size_t size = strtoull(argv[1], NULL, 10);
    int runs = atoi(argv[2]);
    if (size == 0 || runs < 1) {
        fprintf(stderr, "bad SIZE or RUNS\n");
        return 2;
    }
    size_t reps = ((size_t)1 << 30) / size;
    if (reps == 0)
        reps = 1;
    size_t alloc = (size + 4095) / 4096 * 4096;
    char *src = aligned_alloc(4096, alloc);
    char *dst = aligned_alloc(4096, alloc);
    if (!src || !dst) {
        fprintf(stderr, "allocation of 2 x %zu bytes failed\n", alloc);
        return 1;
    }
    /* Pre-fault both buffers so page faults are not timed. */
    memset(src, 1, size);
    memset(dst, 0, size);
    memcpy(dst, src, size); /* warm-up */
    for (int r = 0; r < runs; r++) {
        double t0 = now();
        for (size_t k = 0; k < reps; k++) {
            memcpy(dst, src, size);
            /* Keep the compiler from dropping or merging the copies. */
            __asm__ __volatile__("" : : "r"(dst), "r"(src) : "memory");
        }
        double t1 = now();
        printf("%.9f\n", (t1 - t0) / (double)reps);
    }
    if (dst[size - 1] != 1)
        return 1;
    free(src);
    free(dst);
    return 0;
}
"""


class Skip(Exception):
    """A peer (or one size of it) cannot be measured; the message says why."""


# --------------------------------------------------------------------------
# Child processes. Every child gets its own process group, so that it and
# anything it starts (Dask's worker processes, for instance) can be stopped
# together, and is asked to die with this process (Linux parent-death
# signal) in case this one is killed without a chance to clean up.
# --------------------------------------------------------------------------

def _child_setup():
    os.setsid()  # own process group (and no controlling terminal)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:  # not Linux: rely on the try/finally clean-up alone
        pass


def _popen(cmd, **kwargs):
    return subprocess.Popen(cmd, preexec_fn=_child_setup, **kwargs)


def _kill_group(proc, grace_s=5.0):
    """Stop proc's whole process group: SIGTERM, then SIGKILL after grace_s."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, grace_s)):
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            proc.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            continue
        # The leader is gone; make sure nothing else in its group lingers.
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        return


def run(cmd, timeout=PROCESS_TIMEOUT_S, env=None, stderr=subprocess.PIPE):
    """Run cmd to completion; return (returncode, stdout, stderr). On timeout
    the process group is killed and Skip is raised."""
    proc = _popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                  stderr=stderr, text=True, env=env)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc, grace_s=2.0)
        proc.communicate()
        raise Skip(f"{os.path.basename(cmd[0])} did not finish within "
                   f"{timeout:.0f} s")
    finally:
        if proc.poll() is None:
            _kill_group(proc, grace_s=2.0)
    # Reap anything the command left behind in its group.
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return proc.returncode, out, err or ""


class Server:
    """A background server process, stopped (with its process group) on
    leaving the with-block. Its output goes to a temporary file, read back
    for error messages."""

    def __init__(self, cmd, env=None):
        self.cmd = cmd
        self.env = env
        self.proc = None
        self.log = None

    def __enter__(self):
        self.log = tempfile.TemporaryFile(mode="w+")
        self.proc = _popen(self.cmd, stdin=subprocess.DEVNULL,
                           stdout=self.log, stderr=subprocess.STDOUT,
                           env=self.env)
        return self

    def output(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def wait_listening(self, port, timeout=LISTEN_TIMEOUT_S):
        deadline = time.monotonic() + timeout
        while not port_listening(port):
            if self.proc.poll() is not None:
                raise Skip(f"{os.path.basename(self.cmd[0])} server exited "
                           f"(code {self.proc.returncode}): "
                           f"{tail(self.output())}")
            if time.monotonic() > deadline:
                raise Skip(f"{os.path.basename(self.cmd[0])} server not "
                           f"listening on port {port} after {timeout:.0f} s")
            time.sleep(0.02)

    def finish(self, timeout=10.0):
        """Wait for a one-shot server to exit by itself; return its code."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def __exit__(self, *exc):
        if self.proc is not None:
            if self.proc.poll() is None:
                _kill_group(self.proc)
            else:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        if self.log is not None:
            self.log.close()
        return False


def free_port():
    """A TCP port that is free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_listening(port):
    """Whether some socket listens on TCP port `port`. Reads /proc/net/tcp*
    rather than connecting, because a probe connection would be taken by a
    one-shot server (ucx_perftest, iperf3 -1) as its client."""
    found_table = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                lines = f.readlines()[1:]
        except OSError:
            continue
        found_table = True
        for line in lines:
            fields = line.split()
            # local_address is HEXIP:HEXPORT; state 0A is LISTEN.
            if len(fields) > 3 and fields[3] == "0A" and \
                    int(fields[1].rsplit(":", 1)[1], 16) == port:
                return True
    if not found_table:
        # No /proc: give the server a moment and hope.
        time.sleep(1.0)
        return True
    return False


def tail(text, lines=3):
    """Last few non-empty lines of text, on one line, for error messages."""
    kept = [l.strip() for l in text.strip().splitlines() if l.strip()]
    return " | ".join(kept[-lines:]) or "(no output)"


# --------------------------------------------------------------------------
# Installing missing tools.
# --------------------------------------------------------------------------

_apt_updated = False


def ensure_tool(binary, package):
    """Return the path of `binary`, installing Debian `package` with apt-get
    if it is missing. Raises Skip if it cannot be had."""
    global _apt_updated
    path = shutil.which(binary)
    if path:
        return path
    if not shutil.which("apt-get"):
        raise Skip(f"{binary} not on PATH and no apt-get to install "
                   f"{package}")
    if os.geteuid() != 0:
        raise Skip(f"{binary} not on PATH; installing {package} needs root "
                   f"(apt-get install {package})")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    if not _apt_updated:
        print(f"{binary} missing: apt-get update", file=sys.stderr)
        code, _, err = run(["apt-get", "update", "-qq"],
                           timeout=INSTALL_TIMEOUT_S, env=env)
        if code != 0:
            raise Skip(f"{binary} not on PATH and apt-get update failed: "
                       f"{tail(err)}")
        _apt_updated = True
    print(f"installing {package}", file=sys.stderr)
    code, _, err = run(["apt-get", "install", "-y", "-qq", package],
                       timeout=INSTALL_TIMEOUT_S, env=env)
    if code != 0:
        raise Skip(f"{binary} not on PATH and apt-get install {package} "
                   f"failed: {tail(err)}")
    path = shutil.which(binary)
    if not path:
        raise Skip(f"installed {package} but {binary} is still not on PATH")
    return path


# --------------------------------------------------------------------------
# Peers. Each returns the peer's JSON object and a list of per-size skips;
# raising Skip skips the whole peer.
# --------------------------------------------------------------------------

def gb_per_s(size, seconds):
    return size / seconds / 1e9


def bench_memcpy(sizes, runs, workdir):
    cc = os.environ.get("CC", "cc")
    if not shutil.which(cc):
        raise Skip(f"no C compiler ({cc} not on PATH) to build the memcpy "
                   f"benchmark")
    src = os.path.join(workdir, "memcpy_bw.c")
    exe = os.path.join(workdir, "memcpy_bw")
    with open(src, "w") as f:
        f.write(MEMCPY_C)
    code, _, err = run([cc, "-O2", "-o", exe, src])
    if code != 0:
        raise Skip(f"{cc} -O2 failed to build the memcpy benchmark: "
                   f"{tail(err)}")
    results, skipped = [], []
    for size in sizes:
        print(f"memcpy {fmt_size(size)}", file=sys.stderr)
        code, out, err = run([exe, str(size), str(runs)])
        try:
            seconds = [float(x) for x in out.split()]
        except ValueError:
            seconds = []
        if code != 0 or len(seconds) != runs or min(seconds) <= 0:
            skipped.append({"peer": "memcpy", "size": size,
                            "reason": f"memcpy_bw failed (code {code}): "
                                      f"{tail(err)}"})
            continue
        per_run = [gb_per_s(size, s) for s in seconds]
        results.append({"size": size, "gb_per_s": statistics.median(per_run),
                        "runs": per_run})
    return {"peer": "memcpy", "results": results}, skipped


def ucx_version():
    if shutil.which("ucx_info"):
        try:
            _, out, _ = run(["ucx_info", "-v"], timeout=30)
            m = re.search(r"Version\s+(\S+)", out)
            if m:
                return m.group(1)
        except Skip:
            pass
    if shutil.which("dpkg-query"):
        _, out, _ = run(["dpkg-query", "-W", "-f", "${Version}", "ucx-utils"],
                        timeout=30)
        if out.strip():
            return out.strip()
    return None


def parse_ucx_mb_per_s(out):
    """The overall bandwidth from `ucx_perftest -f` output, in UCX's MB/s.

    With -f the result is one row of eight numbers: iterations, overhead
    (usec: percentile, average, overall), bandwidth (MB/s: average,
    overall), message rate (msg/s: average, overall)."""
    for line in reversed(out.splitlines()):
        fields = line.replace("Final:", "").split()
        if len(fields) == 8:
            try:
                numbers = [float(x) for x in fields]
            except ValueError:
                continue
            return numbers[5]
    return None


def ucx_once(perftest, peer, size, iters):
    """One server/client pair of ucx_perftest; returns GB/s."""
    env = dict(os.environ, UCX_TLS=UCX_TLS[peer])
    if peer == "ucx_tcp":
        # Without it UCX would also use any other network device.
        env["UCX_NET_DEVICES"] = "lo"
    port = free_port()
    # Warm-up iterations (default 10,000) are not timed; a fifth of the
    # measured ones, at least 2, lets the connection settle (with only a few
    # the first timed messages are much slower).
    warmup = max(2, iters // 5)
    # The server takes its test parameters from the client and serves one
    # test, then exits. It listens on all addresses (ucx_perftest 1.13 has
    # no bind option) but only the client on 127.0.0.1 connects to it.
    with Server([perftest, "-p", str(port)], env=env) as server:
        server.wait_listening(port)
        code, out, err = run([perftest, "127.0.0.1", "-p", str(port),
                              "-t", "tag_bw", "-s", str(size),
                              "-n", str(iters), "-w", str(warmup), "-f"],
                             env=env)
        server.finish()
        mb_per_s = parse_ucx_mb_per_s(out)
        if code != 0 or mb_per_s is None or mb_per_s <= 0:
            raise Skip(f"ucx_perftest client failed (code {code}): "
                       f"{tail(out + err)}; server: {tail(server.output())}")
    # ucx_perftest's "MB" is 2^20 bytes (it divides bytes by 1024*1024):
    # a 1 MiB message with an overall overhead of 23.122 usec is printed
    # as 43248.72 MB/s = 1048576 / 23.122e-6 / 2^20. Convert to 1e9 B/s.
    return mb_per_s * (1 << 20) / 1e9


def ucx_iters(gb, size, seconds):
    return int(min(UCX_MAX_ITERS, max(3, round(gb * 1e9 * seconds / size))))


def bench_ucx(peer, sizes, runs):
    perftest = ensure_tool("ucx_perftest", "ucx-utils")
    version = ucx_version()
    results, skipped = [], []
    for size in sizes:
        print(f"{peer} {fmt_size(size)}", file=sys.stderr)
        try:
            # Calibrate on a short run (also a warm-up), then time every run
            # with the same iteration count, aiming at UCX_TARGET_S each.
            guess = UCX_GUESS_GB_PER_S[peer]
            calibration = ucx_once(perftest, peer, size,
                                   ucx_iters(guess, size, UCX_CALIBRATION_S))
            iters = ucx_iters(calibration, size, UCX_TARGET_S)
            per_run = [ucx_once(perftest, peer, size, iters)
                       for _ in range(runs)]
        except Skip as e:
            skipped.append({"peer": peer, "size": size, "reason": str(e)})
            continue
        results.append({"size": size, "gb_per_s": statistics.median(per_run),
                        "iterations": iters, "runs": per_run})
    report = {"peer": peer}
    if version:
        report["version"] = version
    report["results"] = results
    return report, skipped


def bench_iperf3():
    iperf3 = ensure_tool("iperf3", "iperf3")
    port = free_port()
    print(f"iperf3 ({IPERF3_SECONDS} s, one stream)", file=sys.stderr)
    with Server([iperf3, "-s", "-1", "-B", "127.0.0.1", "-p", str(port)]) \
            as server:
        server.wait_listening(port)
        code, out, err = run([iperf3, "-c", "127.0.0.1", "-p", str(port),
                              "-t", str(IPERF3_SECONDS), "-J"],
                             timeout=IPERF3_SECONDS + 60)
        server.finish()
    try:
        data = json.loads(out)
        bps = data["end"]["sum_received"]["bits_per_second"]
    except (ValueError, KeyError, TypeError):
        raise Skip(f"iperf3 client failed (code {code}): {tail(out + err)}")
    report = {"peer": "iperf3"}
    m = re.search(r"(\d+(?:\.\d+)+)",
                  str(data.get("start", {}).get("version", "")))
    if m:
        report["version"] = m.group(1)
    report["results"] = [{"size": None, "gb_per_s": bps / 8 / 1e9,
                          "seconds": IPERF3_SECONDS}]
    return report, []


def bench_dask(sizes, runs):
    setup = os.path.join(HERE, "setup_venv.sh")
    print("dask: preparing venv (setup_venv.sh)", file=sys.stderr)
    # setup_venv.sh prints progress on stderr (passed through) and the
    # venv's python as the last line on stdout.
    code, out, _ = run(["bash", setup], timeout=INSTALL_TIMEOUT_S,
                       stderr=None)
    lines = out.strip().splitlines()
    if code != 0 or not lines:
        raise Skip(f"setup_venv.sh failed (code {code})")
    python = lines[-1].strip()
    script = os.path.join(HERE, "dask_p2p.py")
    results, skipped = [], []
    version = None
    # One process, with a fresh cluster, per size: a failure or a hang at
    # one size does not lose the others, and memory from a large size is
    # returned before the next.
    for size in sizes:
        print(f"dask {fmt_size(size)}", file=sys.stderr)
        try:
            code, out, _ = run([python, script, "--sizes", str(size),
                                "--runs", str(runs)], stderr=None)
            if code != 0:
                raise Skip(f"dask_p2p.py failed (code {code}); see its "
                           f"output above")
            try:
                data = json.loads(out)
            except ValueError:
                raise Skip(f"dask_p2p.py printed no JSON: {tail(out)}")
        except Skip as e:
            skipped.append({"peer": "dask", "size": size, "reason": str(e)})
            continue
        version = data.get("version", version)
        results.extend(data["results"])
    if not results and skipped:
        raise Skip(skipped[0]["reason"])
    report = {"peer": "dask"}
    if version:
        report["version"] = version
    report["results"] = results
    return report, skipped


# --------------------------------------------------------------------------
# Command line and output.
# --------------------------------------------------------------------------

def parse_size(text):
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(B|KiB|MiB|GiB)?\s*", text)
    if not m:
        raise ValueError(f"bad size {text!r}: use a number with B, KiB, MiB "
                         f"or GiB, like 16MiB")
    value = float(m.group(1)) * UNITS[m.group(2) or "B"]
    if value != int(value) or value < 1:
        raise ValueError(f"bad size {text!r}: not a whole number of bytes")
    return int(value)


def fmt_size(size):
    for unit in ("GiB", "MiB", "KiB"):
        if size % UNITS[unit] == 0:
            return f"{size // UNITS[unit]}{unit}"
    return f"{size}B"


def print_table(sizes, report):
    peers = report["peers"]
    width = max([len("peer")] + [len(p["peer"]) for p in peers])
    columns = [fmt_size(s) for s in sizes]
    print("GB/s (1e9 bytes/s), median of runs", file=sys.stderr)
    print(f"{'peer':<{width}}" + "".join(f"  {c:>14}" for c in columns),
          file=sys.stderr)
    for p in peers:
        by_size = {r["size"]: r for r in p["results"]}
        if None in by_size:  # size-independent (iperf3)
            r = by_size[None]
            print(f"{p['peer']:<{width}}  {r['gb_per_s']:>14.2f}  "
                  f"(any size: one TCP stream for {r.get('seconds', '?')} s)",
                  file=sys.stderr)
            continue
        cells = []
        for s in sizes:
            r = by_size.get(s)
            if r is None:
                cell = "-"
            elif r.get("gb_per_s") is None:
                cell = f"n/a ({r['seconds']:.3f}s)" if "seconds" in r else "n/a"
            elif "seconds" in r:
                cell = f"{r['gb_per_s']:.2f} ({r['seconds']:.3f}s)"
            else:
                cell = f"{r['gb_per_s']:.2f}"
            cells.append(cell)
        print(f"{p['peer']:<{width}}" + "".join(f"  {c:>14}" for c in cells),
              file=sys.stderr)
    for s in report["skipped"]:
        what = s["peer"] + (f" {fmt_size(s['size'])}" if "size" in s else "")
        print(f"skipped {what}: {s['reason']}", file=sys.stderr)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES,
                        help="comma-separated buffer sizes with B, KiB, MiB "
                             f"or GiB (default {DEFAULT_SIZES})")
    parser.add_argument("--runs", type=int, default=5,
                        help="runs per size (default 5); the median is "
                             "reported")
    parser.add_argument("--only", default=",".join(PEERS),
                        help="comma-separated peers to run (default all: "
                             f"{','.join(PEERS)})")
    parser.add_argument("--json", metavar="PATH", help="write results here")
    args = parser.parse_args()
    if args.runs < 1:
        parser.error("--runs must be at least 1")
    try:
        args.sizes = [parse_size(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError as e:
        parser.error(str(e))
    if not args.sizes:
        parser.error("--sizes is empty")
    args.only = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in args.only if p not in PEERS]
    if unknown:
        parser.error(f"unknown peer(s) {', '.join(unknown)}; "
                     f"known: {', '.join(PEERS)}")
    return args


def main():
    args = parse_args()
    # SIGTERM (say, from the harness) unwinds like Ctrl-C, so the finally
    # blocks stop every server and cluster.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = {"peers": [], "skipped": []}
    with tempfile.TemporaryDirectory(prefix="p2p-peers-") as workdir:
        for peer in [p for p in PEERS if p in args.only]:
            try:
                if peer == "memcpy":
                    result, skipped = bench_memcpy(args.sizes, args.runs,
                                                   workdir)
                elif peer in ("ucx_shm", "ucx_tcp"):
                    result, skipped = bench_ucx(peer, args.sizes, args.runs)
                elif peer == "iperf3":
                    result, skipped = bench_iperf3()
                else:
                    result, skipped = bench_dask(args.sizes, args.runs)
            except Skip as e:
                print(f"{peer}: skipped: {e}", file=sys.stderr)
                report["skipped"].append({"peer": peer, "reason": str(e)})
                continue
            report["peers"].append(result)
            report["skipped"].extend(skipped)
    print_table(args.sizes, report)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
