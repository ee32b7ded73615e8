#!/usr/bin/env bash
# Enforces the crate dependency rule of the design: which internal crate may depend on
# which, and which crates may use tokio, cudarc and nvml-wrapper. Fails listing violations.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --no-deps --locked | python3 -c '
import json, sys
allowed = {
    "rask-proto": set(),
    "rask-scheduler-core": {"rask-proto"},
    "rask-worker-core": {"rask-proto"},
    "rask-transport": {"rask-proto", "rask-device"},
    "rask-device": {"rask-proto"},
    "rask-kernels": {"rask-proto", "rask-device"},
    "rask-array": {"rask-proto"},
    "rask-macros": set(),
    "rask-deploy": set(),
    "rask-dashboard": set(),  # renders what the scheduler gives it; knows no other crate
    "rask-client": {"rask-proto", "rask-transport", "rask-array"},
    "rask-scheduler": {"rask-proto", "rask-transport", "rask-scheduler-core"},
    "rask-worker": {"rask-proto", "rask-transport", "rask-worker-core", "rask-device", "rask-kernels"},
    "rask": None,        # the facade: anything
    "rask-bench": None,  # the harness: anything
    "rask-testkit": None,
}
tokio_ok = {"rask-transport", "rask-scheduler", "rask-worker", "rask-client", "rask-dashboard", "rask-testkit", "rask-bench", "rask"}
gpu_ok = {"rask-device"}
meta = json.load(sys.stdin)
bad = []
for p in meta["packages"]:
    name = p["name"]
    if name not in allowed:
        bad.append(f"{name}: not in the dependency rule (add it to ci/check-deps.sh and DESIGN)")
        continue
    for d in p["dependencies"]:
        dn, kind = d["name"], d.get("kind")
        if dn.startswith("rask"):
            if dn == "rask-testkit" and kind == "dev":
                continue
            if dn == "rask-testkit":
                bad.append(f"{name} -> rask-testkit: only as a dev-dependency")
            elif allowed[name] is not None and dn not in allowed[name] and kind != "dev":
                bad.append(f"{name} -> {dn}: not allowed")
        if dn == "tokio" and name not in tokio_ok and kind != "dev":
            bad.append(f"{name} -> tokio: only transport, scheduler, worker, client, dashboard, testkit and bench use tokio")
        if dn in ("cudarc", "nvml-wrapper") and name not in gpu_ok:
            bad.append(f"{name} -> {dn}: only rask-device uses {dn}")
if bad:
    print("dependency rule violated:\n  " + "\n  ".join(bad))
    sys.exit(1)
print("dependency rule: ok (%d packages)" % len(meta["packages"]))
'
