#!/usr/bin/env bash
# Validates the Kubernetes manifests rask-deploy writes, offline (no API server), against
# the OpenAPI schemas of the Kubernetes API with kubernetes-validate in strict mode (an
# unknown field is an error, as with `kubectl apply --validate=strict`):
#
#   1. creates or reuses a Python venv holding kubernetes-validate;
#   2. writes the manifests of the example clusters (examples/k8s_manifests.rs: CPU
#      workers, 2 GPUs per worker, a shared secret) and of `rask k8s manifests` into a
#      temporary directory;
#   3. validates every document of each file, and checks what the schemas cannot: the
#      selectors match the pods' labels, the workers dial the scheduler's Service, the
#      GPU limit and the secret are where they belong, an awkward argument reads back
#      unchanged;
#   4. checks that broken manifests are rejected (a string for `replicas`, an unknown
#      field, an unknown kind), so that a pass means something.
#
# Usage: crates/deploy/validate-k8s.sh
# Environment:
#   RASK_K8S_VENV     the venv (default target/k8s-venv; relative to the workspace root)
#   RASK_K8S_VERSION  the Kubernetes version to validate against (default: the newest
#                     schemas of the installed kubernetes-validate)
# Exits 0 when everything holds, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv="${RASK_K8S_VENV:-target/k8s-venv}"
kv="$venv/bin/kubernetes-validate"
if [ ! -x "$kv" ]; then
    echo "creating $venv with kubernetes-validate"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate
fi
version_args=()
if [ -n "${RASK_K8S_VERSION:-}" ]; then
    version_args=(--kubernetes-version "$RASK_K8S_VERSION")
fi

out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
cargo run --quiet -p rask-deploy --example k8s_manifests -- "$out/ok" >/dev/null
# And what `rask k8s manifests` prints (CPU workers, no secret).
cargo run --quiet --bin rask -- k8s manifests --name rask-cli --image registry.example/rask:0.1 \
    --nworkers 3 --nthreads 2 --memory-limit 6GiB --cpu 1.5 >"$out/ok/cli.yaml"
files=("$out"/ok/*.yaml)

# check FILE: runs kubernetes-validate --strict on FILE, shows its report, and succeeds
# when it passed every document. kubernetes-validate only warns, and exits 0, on a kind
# it has no schema for: a warning fails here, as does a document it did not report.
check() {
    local file="$1" log documents passed
    if ! log="$("$kv" --strict "${version_args[@]}" "$file" 2>&1)"; then
        echo "$log"
        return 1
    fi
    echo "$log"
    if grep -q '^WARN' <<<"$log"; then
        return 1
    fi
    documents=$(($(grep -c '^---$' "$file") + 1))
    passed=$(grep -c ' passed for resource ' <<<"$log" || true)
    [ "$passed" -eq "$documents" ]
}

echo "== kubernetes-validate $("$kv" --version), strict"
failed=0
for f in "${files[@]}"; do
    check "$f" || { echo "FAIL: $(basename "$f") is not valid"; failed=1; }
done

echo "== what the schemas do not check"
# The awkward argument of examples/k8s_manifests.rs (AWKWARD_ARG), as it must read back.
"$venv/bin/python" - "${files[@]}" <<'EOF' || failed=1
import os, sys, yaml

AWKWARD = "--note=it's \"quoted\": #not-a-comment, yes, 0755, \\ tab\tnewline\n"
problems = []
for path in sys.argv[1:]:
    name = os.path.basename(path)
    def need(ok, what):
        if not ok:
            problems.append(f"{name}: {what}")
    with open(path) as f:
        docs = list(yaml.safe_load_all(f))
    kinds = [d["kind"] for d in docs]
    need(kinds == ["Deployment", "Service", "Deployment"], f"documents are {kinds}")
    sched, svc, work = docs
    pods = {}
    for dep in (sched, work):
        selector = dep["spec"]["selector"]["matchLabels"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        pods[dep["metadata"]["name"]] = labels
        need(selector.items() <= labels.items(), f"{dep['metadata']['name']}: selector {selector} misses its pods {labels}")
    sched_labels = sched["spec"]["template"]["metadata"]["labels"]
    work_labels = work["spec"]["template"]["metadata"]["labels"]
    need(svc["spec"]["selector"].items() <= sched_labels.items(), "the Service does not select the scheduler pod")
    need(not svc["spec"]["selector"].items() <= work_labels.items(), "the Service selects worker pods")
    need(not work["spec"]["selector"]["matchLabels"].items() <= sched_labels.items(), "the worker selector takes the scheduler pod")
    need(sched["spec"]["replicas"] == 1, "more than one scheduler")
    comm = {p["name"]: p for p in svc["spec"]["ports"]}["tcp-comm"]
    sched_ports = {p["name"]: p["containerPort"] for p in sched["spec"]["template"]["spec"]["containers"][0]["ports"]}
    need(sched_ports.get("tcp-comm") == comm["targetPort"], "the Service's tcp-comm port is not the scheduler's")
    worker = work["spec"]["template"]["spec"]["containers"][0]
    address = f"tcp://{svc['metadata']['name']}.{svc['metadata']['namespace']}.svc.cluster.local:{comm['port']}"
    need(worker["args"][:2] == ["worker", address], f"workers dial {worker['args'][1]}, not {address}")
    env = {e["name"]: e for e in worker["env"]}
    need(env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP", "POD_IP is not the pod's IP")
    listen = worker["args"][worker["args"].index("--contact-address") + 1]
    need(listen == f"$(POD_IP):{worker['ports'][0]['containerPort']}", f"workers advertise {listen}")
    gpus = worker["resources"]["limits"].get("nvidia.com/gpu")
    need((gpus is not None) == (name == "gpu.yaml"), f"GPU limit {gpus!r}")
    need("nvidia.com/gpu" not in worker["resources"]["requests"], "GPUs in requests")
    for dep in (sched, work):
        spec = dep["spec"]["template"]["spec"]
        args = spec["containers"][0]["args"]
        secret = "volumes" in spec
        need(secret == (name == "secret.yaml"), f"{dep['metadata']['name']}: volumes {secret}")
        need(("--auth-file" in args) == secret, f"{dep['metadata']['name']}: --auth-file without its volume or the reverse")
    if name == "secret.yaml":
        need(worker["args"][-1] == AWKWARD, f"the awkward argument reads back as {worker['args'][-1]!r}")
for p in problems:
    print("FAIL:", p)
print("checked", len(sys.argv) - 1, "files:", "ok" if not problems else f"{len(problems)} problems")
sys.exit(1 if problems else 0)
EOF

echo "== broken manifests must be rejected"
mkdir -p "$out/broken"
cpu="$out/ok/cpu.yaml"
sed 's/^  replicas: 3$/  replicas: "two"/' "$cpu" >"$out/broken/replicas-string.yaml"
sed 's/^  replicas: 3$/  replicaz: 3/' "$cpu" >"$out/broken/unknown-field.yaml"
sed 's/^kind: "Service"$/kind: "Servise"/' "$cpu" >"$out/broken/unknown-kind.yaml"
for f in "$out"/broken/*.yaml; do
    if cmp -s "$f" "$cpu"; then
        echo "FAIL: $(basename "$f") was not broken (the example changed?)"
        failed=1
    elif check "$f" >"$out/log"; then
        cat "$out/log"
        echo "FAIL: $(basename "$f") was accepted"
        failed=1
    else
        echo "rejected $(basename "$f"): $(grep -E '^(ERROR|WARN)' "$out/log" | head -1)"
    fi
done

if [ "$failed" -ne 0 ]; then
    echo "k8s manifests: FAILED"
    exit 1
fi
echo "k8s manifests: ok (${#files[@]} files)"
