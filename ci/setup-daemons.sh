#!/usr/bin/env bash
# Installs the daemons and tools the tests start for themselves (they start and stop
# them by pid file; nothing here starts one): sshd for SshCluster, Slurm and munge for
# SlurmCluster, Slurm's PBS compatibility (qsub, qdel) for its PBS scripts, promtool
# (Debian's prometheus) for the metrics and headless Chromium for the dashboard's pages.
# Debian packages; needs root. Does nothing when they are there already.
set -euo pipefail
need=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v slurmctld >/dev/null 2>&1 || [ -x /usr/sbin/slurmctld ] || need+=(slurm-wlm slurm-client)
command -v munged >/dev/null 2>&1 || [ -x /usr/sbin/munged ] || need+=(munge)
# qsub and qdel over Slurm (its Torque/PBS compatibility), for the PBS job scripts.
command -v qsub >/dev/null 2>&1 || need+=(slurm-wlm-torque)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# Chromium with its recommended fonts (a page's text must render in screenshots).
browser=()
command -v chromium >/dev/null 2>&1 || browser+=(chromium)
if [ "${#need[@]}" -eq 0 ] && [ "${#browser[@]}" -eq 0 ]; then
    echo "daemons: installed already"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "daemons: ${need[*]} ${browser[*]} missing and not root: the tests that need them will say they cannot run" >&2
    exit 0
fi
echo "daemons: installing ${need[*]} ${browser[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ "${#need[@]}" -gt 0 ]; then
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ "${#browser[@]}" -gt 0 ]; then
    apt-get install -y -qq "${browser[@]}" >/dev/null
fi
