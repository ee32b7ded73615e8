#!/usr/bin/env bash
# A single-node Slurm (munged, slurmctld, slurmd) with a configuration of its own in DIR,
# for the deployment benchmarks: nothing outside DIR and /run/munge is written, and
# `stop` ends exactly the daemons `start` began (by their pid files). Needs root,
# slurm-wlm and munge (ci/setup-daemons.sh installs them).
#
#   conf=$(bash benches/compare/slurm_local.sh start DIR)   # prints SLURM_CONF's path
#   bash benches/compare/slurm_local.sh stop DIR
set -euo pipefail
cmd="${1:?start or stop}"
dir="${2:?a directory}"

stop() {
    for f in slurmd slurmctld munged; do
        if [ -f "$dir/$f.pid" ]; then
            kill "$(cat "$dir/$f.pid")" 2>/dev/null || true
            rm -f "$dir/$f.pid"
        fi
    done
}

case "$cmd" in
stop)
    stop
    exit 0
    ;;
start) ;;
*)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac

mkdir -p "$dir/state" "$dir/spool" "$dir/logs" /run/munge
chown munge:munge /run/munge
setpriv --reuid munge --regid munge --init-groups /usr/sbin/munged -F --force \
    >"$dir/munged.log" 2>&1 </dev/null &
echo $! >"$dir/munged.pid"
for _ in $(seq 100); do munge -n >/dev/null 2>&1 && break; sleep 0.05; done

cat >"$dir/slurm.conf" <<CONF
ClusterName=raskbench
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.daemon.pid
SlurmdPidFile=$dir/slurmd.daemon.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
MpiDefault=none
MailProg=/bin/true
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$(nproc) RealMemory=8000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"
/usr/sbin/slurmctld -D -f "$SLURM_CONF" >/dev/null 2>&1 </dev/null &
echo $! >"$dir/slurmctld.pid"
/usr/sbin/slurmd -D -N localhost -f "$SLURM_CONF" >/dev/null 2>&1 </dev/null &
echo $! >"$dir/slurmd.pid"
for _ in $(seq 200); do
    if sinfo -h -o %T 2>/dev/null | grep -q idle; then
        echo "$SLURM_CONF"
        exit 0
    fi
    sleep 0.05
done
echo "Slurm did not come up; see $dir/*.log" >&2
stop
exit 1
