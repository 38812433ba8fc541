#!/usr/bin/env bash
# A real single-node SLURM scheduler on this machine, for the tests marked slurm; CI's .ci/run
# starts it before the tests.
#
#   bash .ci/slurm.sh start    install slurm-wlm and munge when missing (apt-get, as root), write a
#                              slurm.conf with this host as its one node, start munged, slurmctld
#                              and slurmd, and wait until the node is idle. Idempotent: what runs
#                              is left running.
#   bash .ci/slurm.sh stop     stop the daemons this script started (by their pid files)
#   bash .ci/slurm.sh status   sinfo's view of the node
#
# A machine without root or apt-get, or with a slurm.conf this script did not write and no
# scheduler answering, is skipped with one line (exit 0): the slurm tests then skip themselves.
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
MARK="# written by PrAC-LTH .ci/slurm.sh"
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid
MUNGE_PID=/run/munge/munged.pid
LOG_DIR=/var/log/slurm
WAIT_S=60

skip() { echo "slurm: skipped: $*"; exit 0; }
ours() { [ -f "$CONF" ] && head -1 "$CONF" | grep -qxF "$MARK"; }
answers() { sinfo -h >/dev/null 2>&1; }
alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

install_packages() {
    command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null && return
    command -v apt-get >/dev/null || skip "slurm-wlm and munge are not installed and there is no apt-get to install them"
    echo "slurm: installing slurm-wlm and munge"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq slurm-wlm munge; } >/dev/null \
        || skip "apt-get could not install slurm-wlm and munge (no network or package source?)"
}

write_conf() {
    # The node's CPUs and RealMemory as slurmd measures them (its first line, less UpTime).
    local node
    node=$(slurmd -C | head -1)
    local wanted
    wanted=$(cat <<EOF
$MARK
ClusterName=ci
SlurmctldHost=$(hostname -s)
SlurmUser=root
AuthType=auth/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
# Cores are what jobs share out; memory is not a consumable (a job without --mem would take it all).
SelectTypeParameters=CR_Core
# Dependants of a failed or cancelled job leave the queue instead of waiting for ever.
DependencyParameters=kill_invalid_depend
# squeue remembers a finished job's state (COMPLETED, CANCELLED, TIMEOUT) this many seconds.
MinJobAge=600
ReturnToService=2
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
$node State=UNKNOWN
PartitionName=ci Nodes=$(hostname -s) Default=YES MaxTime=INFINITE State=UP
EOF
)
    if [ "$(cat "$CONF" 2>/dev/null)" != "$wanted" ]; then
        mkdir -p "$CONF_DIR"
        printf '%s\n' "$wanted" > "$CONF.tmp" && mv -f "$CONF.tmp" "$CONF"
        echo "slurm: wrote $CONF ($node)"
        # A running scheduler read the old file; some settings (SelectType) need a restart.
        stop_daemon "$SLURMD_PID"
        stop_daemon "$CTLD_PID"
    fi
}

start_munge() {
    alive "$MUNGE_PID" && return
    if [ ! -s /etc/munge/munge.key ]; then
        mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
            || dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    fi
    chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    chmod 400 /etc/munge/munge.key
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
    if id munge >/dev/null 2>&1; then
        su -s /bin/sh munge -c "munged --pid-file=$MUNGE_PID"
    else
        munged --force --pid-file="$MUNGE_PID"
    fi
}

stop_daemon() {
    alive "$1" || return 0
    local pid
    pid=$(cat "$1")
    kill "$pid"
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    echo "slurm: stopped $(basename "$1" .pid)"
}

wait_idle() {
    local host state
    host=$(hostname -s)
    for _ in $(seq "$WAIT_S"); do
        state=$(sinfo -h -N -n "$host" -o %T 2>/dev/null | head -1 || true)
        case "$state" in
            idle|mixed|allocated) echo "slurm: node $host is $state"; return 0 ;;
            down*|drain*|drained*) scontrol update nodename="$host" state=resume 2>/dev/null || true ;;
        esac
        sleep 1
    done
    echo "slurm: node $host not idle after ${WAIT_S}s (state: ${state:-no answer}); see $LOG_DIR" >&2
    return 1
}

start() {
    if answers && { ! ours || [ "$(id -u)" != 0 ]; }; then
        echo "slurm: a scheduler already answers (sinfo); using it"
        return 0
    fi
    [ "$(id -u)" = 0 ] || skip "not root: a local scheduler needs root (run the slurm tests on a cluster, docs/cluster.md)"
    if [ -f "$CONF" ] && ! ours; then skip "$CONF was not written by this script; not touching it"; fi
    install_packages
    mkdir -p /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR"
    start_munge
    write_conf
    alive "$CTLD_PID" || slurmctld -i
    alive "$SLURMD_PID" || slurmd
    wait_idle
}

stop() {
    stop_daemon "$SLURMD_PID"
    stop_daemon "$CTLD_PID"
    stop_daemon "$MUNGE_PID"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) sinfo -N ;;
    *) echo "usage: bash .ci/slurm.sh start|stop|status" >&2; exit 2 ;;
esac
