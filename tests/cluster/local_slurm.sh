#!/usr/bin/env bash
# A real single-node SLURM cluster on localhost, for the submitit launcher tests (docs/design.md §10).
#
#   tests/cluster/local_slurm.sh start    install if needed, start the daemons, wait until usable
#   tests/cluster/local_slurm.sh stop     stop only the daemons this script started (pid files)
#   tests/cluster/local_slurm.sh status   say which daemons run and whether the node is idle
#
# What it owns: the Debian packages (installed once), a state directory holding every config,
# socket, pid file, log and database of the cluster, and five daemons it starts directly (CI
# machines have no systemd): munged, mariadbd, slurmdbd, slurmctld, slurmd. It never touches a
# daemon it did not start, and never edits /etc/slurm or /etc/munge.
#
# Accounting (slurmdbd + MariaDB) is on because submitit polls `sacct`: without it a cancelled or
# killed job leaves the Hydra driver waiting forever.
#
# Clients (sinfo, sbatch, sacct, submitit) must read this cluster's slurm.conf: run
#   export SLURM_CONF=<state dir>/slurm.conf
# (`start` and `status` print the line). Must run as root: slurmd runs jobs as their submitter.
#
# Environment:
#   IMI_BENCH_SLURM_DIR      state directory (default /tmp/imi-bench-slurm)
#   IMI_BENCH_SLURM_TIMEOUT  seconds to wait for the node to become idle and sacct to answer (90)
set -euo pipefail

STATE_DIR="${IMI_BENCH_SLURM_DIR:-/tmp/imi-bench-slurm}"
TIMEOUT_S="${IMI_BENCH_SLURM_TIMEOUT:-90}"
PACKAGES=(slurmctld slurmd slurm-client munge slurmdbd mariadb-server)
# The binaries that prove the packages are installed (one per package).
BINARIES=(/usr/sbin/slurmctld /usr/sbin/slurmd /usr/bin/sinfo /usr/sbin/munged /usr/sbin/slurmdbd
          /usr/sbin/mariadbd)
# Start order; stop goes in reverse.
DAEMONS=(munged mariadbd slurmdbd slurmctld slurmd)

# slurm.conf has no quoting: a path with blanks would silently split.
[[ "$STATE_DIR" != *[[:space:]]* ]] || { echo "local_slurm: ERROR: IMI_BENCH_SLURM_DIR must not contain blanks: '$STATE_DIR'" >&2; exit 2; }
[[ "$STATE_DIR" == /* ]] || { echo "local_slurm: ERROR: IMI_BENCH_SLURM_DIR must be an absolute path: '$STATE_DIR'" >&2; exit 2; }
export SLURM_CONF="$STATE_DIR/slurm.conf"
MUNGE_SOCKET="$STATE_DIR/munge-socket/munge.socket.2"
MYSQL_SOCKET="$STATE_DIR/mysql/mysqld.sock"

log() { echo "local_slurm: $*"; }
die() { echo "local_slurm: ERROR: $*" >&2; exit 1; }

pid_file() { echo "$STATE_DIR/run/$1.pid"; }

# The pid of a daemon this script started, if it is still that daemon. A pid file alone is not
# proof: after a reboot the number may belong to an unrelated process, which we must never kill.
running_pid() {
    local name="$1" file pid
    file="$(pid_file "$name")"
    [[ -s "$file" ]] || return 1
    pid="$(tr -dc '0-9' <"$file")"
    [[ -n "$pid" && -r "/proc/$pid/comm" ]] || return 1
    [[ "$(cat "/proc/$pid/comm")" == "$name" ]] || return 1
    echo "$pid"
}

install_packages() {
    local missing=0 bin
    for bin in "${BINARIES[@]}"; do [[ -x "$bin" ]] || missing=1; done
    ((missing)) || return 0
    command -v apt-get >/dev/null || die "SLURM is not installed and apt-get is missing; install: ${PACKAGES[*]}"
    log "installing ${PACKAGES[*]} (apt-get)"
    # The packages' scripts would start system-wide daemons (with configs that do not exist yet).
    # Debian's policy-rc.d hook forbids that; container images usually ship one, else add it for
    # the duration of the install.
    local own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT   # also if apt-get fails below
    fi
    # Lock timeout: another apt run on the same machine should delay us, not fail us.
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 update -qq \
        || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq \
        --no-install-recommends "${PACKAGES[@]}" >/dev/null \
        || die "apt-get install ${PACKAGES[*]} failed"
    if ((own_policy)); then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
    for bin in "${BINARIES[@]}"; do [[ -x "$bin" ]] || die "$bin still missing after install"; done
}

# `slurmd -C` reports this machine's layout, e.g.
#   NodeName=host CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24036
# We keep the CPU layout and declare RealMemory a little below the measured value, because a node
# that reports less memory than declared is drained ("Low RealMemory").
node_hardware() {
    local line field cpus="" mem="" layout=""
    line="$(slurmd -C 2>/dev/null | head -n 1)"
    [[ "$line" == NodeName=* ]] || die "'slurmd -C' gave no node description: '$line'"
    for field in $line; do
        case "$field" in
            CPUs=*) cpus="${field#CPUs=}" ;;
            SocketsPerBoard=*|CoresPerSocket=*|ThreadsPerCore=*|Boards=*) layout+=" $field" ;;
            RealMemory=*) mem="${field#RealMemory=}" ;;
        esac
    done
    [[ -n "$cpus" && -n "$mem" ]] || die "could not read CPUs/RealMemory from 'slurmd -C': '$line'"
    # 5% below, and at least 256 MB below, what slurmd measured.
    local margin=$((mem / 20)); ((margin < 256)) && margin=256
    echo "CPUs=$cpus$layout RealMemory=$((mem - margin))"
}

write_configs() {
    local hw
    hw="$(node_hardware)"
    mkdir -p "$STATE_DIR"/{run,log,ctld,spool,munge,munge-socket,mysql}
    cat >"$STATE_DIR/slurm.conf" <<EOF
# Written by tests/cluster/local_slurm.sh: a one-node test cluster on localhost.
ClusterName=imibench
SlurmctldHost=localhost
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
MailProg=/bin/true
MpiDefault=none
# No cgroups: CI containers rarely delegate them; linuxproc tracks job processes by parent pid.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
# A node that went down because the cluster was restarted comes back by itself.
ReturnToService=2
SlurmctldPidFile=$(pid_file slurmctld)
SlurmdPidFile=$(pid_file slurmd)
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
StateSaveLocation=$STATE_DIR/ctld
SlurmdSpoolDir=$STATE_DIR/spool
# Short waits: tests cancel and time out jobs on purpose.
KillWait=5
MessageTimeout=20
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
# For slurmdbd connections Slurm takes the munge socket from here, not from AuthInfo.
AccountingStoragePass=$MUNGE_SOCKET
NodeName=localhost NodeAddr=127.0.0.1 $hw State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
    cat >"$STATE_DIR/cgroup.conf" <<EOF
# Written by tests/cluster/local_slurm.sh. Nothing here uses cgroups (proctrack/linuxproc,
# task/none); the file exists so that slurmd finds one beside slurm.conf.
ConstrainCores=no
ConstrainRAMSpace=no
EOF
    cat >"$STATE_DIR/slurmdbd.conf" <<EOF
# Written by tests/cluster/local_slurm.sh. MariaDB listens on a socket only (--skip-networking);
# slurmdbd finds it through MYSQL_UNIX_PORT and logs in as root by unix-socket authentication.
AuthType=auth/munge
AuthInfo=socket=$MUNGE_SOCKET
DbdHost=localhost
SlurmUser=root
PidFile=$(pid_file slurmdbd)
LogFile=$STATE_DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=root
StorageLoc=slurm_acct_db
EOF
    chmod 600 "$STATE_DIR/slurmdbd.conf"   # slurmdbd refuses a config others can read
}

start_munged() {
    local key="$STATE_DIR/munge/munge.key"
    # munged insists: the key's directory private to munge, the socket's directory open to all
    # (every client connects) but writable only by munge.
    chown munge:munge "$STATE_DIR/munge" "$STATE_DIR/munge-socket"
    chmod 700 "$STATE_DIR/munge"
    chmod 755 "$STATE_DIR/munge-socket"
    if [[ ! -s "$key" ]]; then
        # A key of our own, so this cluster never depends on (or changes) /etc/munge.
        runuser -u munge -- mungekey --create --keyfile="$key" >/dev/null \
            || die "mungekey could not create $key"
    fi
    # munged drops no privileges itself; run it as the munge user as the Debian package does.
    runuser -u munge -- /usr/sbin/munged --key-file="$key" --socket="$MUNGE_SOCKET" \
        --pid-file="$STATE_DIR/munge/munged.pid" --log-file="$STATE_DIR/munge/munged.log" \
        --seed-file="$STATE_DIR/munge/munged.seed" \
        || die "munged failed to start; see $STATE_DIR/munge/munged.log"
    # The pid file lives where munge may write; mirror it into run/ with the others.
    wait_for "munged pid file" 10 test -s "$STATE_DIR/munge/munged.pid"
    cp "$STATE_DIR/munge/munged.pid" "$(pid_file munged)"
}

start_mariadbd() {
    local datadir="$STATE_DIR/mysql/data"
    if [[ ! -d "$datadir/mysql" ]]; then
        mariadb-install-db --user=root --datadir="$datadir" --auth-root-authentication-method=socket \
            --skip-test-db >"$STATE_DIR/log/mariadb-install.log" 2>&1 \
            || die "mariadb-install-db failed; see $STATE_DIR/log/mariadb-install.log"
    fi
    # --no-defaults: ignore /etc/mysql so a system MariaDB's settings (port, socket) never apply.
    setsid /usr/sbin/mariadbd --no-defaults --user=root --datadir="$datadir" --skip-networking \
        --socket="$MYSQL_SOCKET" --pid-file="$(pid_file mariadbd)" \
        --log-error="$STATE_DIR/log/mariadbd.log" --innodb-buffer-pool-size=64M \
        </dev/null >/dev/null 2>&1 &
    wait_for "mariadbd socket" 60 test -S "$MYSQL_SOCKET"
}

start_slurmdbd() {
    MYSQL_UNIX_PORT="$MYSQL_SOCKET" /usr/sbin/slurmdbd \
        || die "slurmdbd failed to start; see $STATE_DIR/log/slurmdbd.log"
    # The pid file appears before slurmdbd listens; slurmctld dies if it cannot reach it
    # ("we have no TRES from it"), so wait for an actual answer.
    wait_for "slurmdbd to answer" 60 sacctmgr -n list cluster
}

start_slurmctld() {
    /usr/sbin/slurmctld || die "slurmctld failed to start; see $STATE_DIR/log/slurmctld.log"
    wait_for "slurmctld" 30 running_pid slurmctld
}

start_slurmd() {
    /usr/sbin/slurmd -N localhost || die "slurmd failed to start; see $STATE_DIR/log/slurmd.log"
    wait_for "slurmd" 30 running_pid slurmd
}

# wait_for <what> <seconds> <command...>: retry the command until it succeeds or time runs out.
wait_for() {
    local what="$1" seconds="$2"; shift 2
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || die "timed out after ${seconds}s waiting for $what (logs: $STATE_DIR/log)"
        sleep 0.5
    done
}

node_idle() { [[ "$(sinfo -h -n localhost -o '%T' 2>/dev/null)" == idle* ]]; }
# The cluster registers itself with slurmdbd on first contact; until then sacct errors out.
sacct_answers() { sacct -n -X -S now-1minutes >/dev/null 2>&1; }

cluster_ready() { node_idle && sacct_answers; }

cmd_start() {
    [[ "$(id -u)" == 0 ]] || die "must run as root (slurmd runs jobs as their submitting user)"
    local t0=$SECONDS name all_running=1 none_running=1
    for name in "${DAEMONS[@]}"; do
        if running_pid "$name" >/dev/null; then none_running=0; else all_running=0; fi
    done
    if ((all_running)); then
        log "already running (state dir $STATE_DIR)"
    else
        install_packages
        # Rewrite the configs only when nothing runs: a live daemon must keep the config it read.
        if ((none_running)) || [[ ! -f "$SLURM_CONF" ]]; then write_configs; fi
        for name in "${DAEMONS[@]}"; do
            if ! running_pid "$name" >/dev/null; then
                log "starting $name"
                "start_$name"
            fi
        done
    fi
    local deadline=$((SECONDS + TIMEOUT_S))
    until cluster_ready; do
        if ((SECONDS >= deadline)); then
            echo "local_slurm: ERROR: cluster not usable after ${TIMEOUT_S}s:" >&2
            echo "  sinfo: $(sinfo -h -n localhost -o '%T %E' 2>&1 | head -n 1)" >&2
            echo "  sacct: $(sacct -n -X -S now-1minutes 2>&1 | head -n 1)" >&2
            echo "  logs:  $STATE_DIR/log/" >&2
            exit 1
        fi
        # A node left "down" from an earlier run (e.g. a crash) is resumed once, explicitly.
        if [[ "$(sinfo -h -n localhost -o '%T' 2>/dev/null)" == down* ]]; then
            scontrol update NodeName=localhost State=RESUME >/dev/null 2>&1 || true
        fi
        sleep 0.5
    done
    log "ready in $((SECONDS - t0))s: partition debug, node localhost idle, accounting on"
    log "clients need: export SLURM_CONF=$SLURM_CONF"
}

cmd_stop() {
    local i name pid
    for ((i = ${#DAEMONS[@]} - 1; i >= 0; i--)); do
        name="${DAEMONS[i]}"
        if pid="$(running_pid "$name")"; then
            log "stopping $name (pid $pid)"
            kill -TERM "$pid" 2>/dev/null || true
            local deadline=$((SECONDS + 30))
            while [[ -e "/proc/$pid" ]] && ((SECONDS < deadline)); do sleep 0.2; done
            if [[ -e "/proc/$pid" ]]; then
                log "$name did not stop in 30 s; killing pid $pid"
                kill -KILL "$pid" 2>/dev/null || true
            fi
        fi
        rm -f "$(pid_file "$name")"
    done
    log "stopped (state kept in $STATE_DIR)"
}

cmd_status() {
    local name pid rc=0
    for name in "${DAEMONS[@]}"; do
        if pid="$(running_pid "$name")"; then
            printf '  %-10s running (pid %s)\n' "$name" "$pid"
        else
            printf '  %-10s not running\n' "$name"; rc=1
        fi
    done
    if ((rc == 0)) && cluster_ready; then
        log "up: $(sinfo -h -o 'partition %P, node %N %T, %c CPUs, %m MB')"
        log "clients need: export SLURM_CONF=$SLURM_CONF"
    else
        log "down (state dir $STATE_DIR)"; rc=1
    fi
    return "$rc"
}

case "${1:-}" in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    *) echo "usage: $0 {start|stop|status}" >&2; exit 2 ;;
esac
