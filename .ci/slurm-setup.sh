#!/usr/bin/env bash
# A real one-node Slurm cluster on this machine, for the Slurm compute environment's tests:
# munged, slurmctld and slurmd on the local hostname, select/cons_tres, munge auth.
#
# Idempotent: each step checks before it acts, so a second run is cheap when all is up.
#
#   .ci/slurm-setup.sh            # install if missing, write slurm.conf, start the daemons
#   .ci/slurm-setup.sh stop       # stop the daemons this script started (pid files below)
#   SLUICE_SLURM_WAIT_S=60        # deadline for `sinfo` to show the node idle
#
# Choices (Debian 12's slurm-wlm 22.05, as root, on the project's 2-core VMs):
#   * The node is declared with this host's real CPUs and memory (less 1 GiB for the OS), so
#     a job asking for more than is free waits in Slurm with reason Resources, as on a site.
#   * proctrack/linuxproc and task/none: no cgroup plugin, which needs a cgroup v2 layout
#     that containers and CI VMs often lack. The job's limits are the container's own
#     (docker run --cpus/--memory), exactly as in Sluice's Docker environment.
#   * No slurmdbd (it needs MySQL): accounting_storage/none. Sluice reads states from squeue
#     and the job's own result file in the shared directory, not from sacct.
#   * MinJobAge=300: a finished job stays visible to squeue for 5 minutes (Slurm's default).
#   * sched_min_interval=0.2 s (Slurm's default is 2 s): a job ending lets the next one start at
#     once, which is what a CI queue of short jobs waits on.
#   * KillWait=30: between scancel's SIGTERM and SIGKILL, longer than the container's stop
#     grace, so the batch script can stop its container and write the result first.
#   * slurmrestd (Debian's slurmrestd, openapi/v0.0.38) on the unix socket $RESTD_SOCKET with
#     rest_auth/local: it trusts the peer's uid, so no JWT key is needed (JWT needs
#     AuthAltTypes=auth/jwt and a key in slurm.conf). It refuses to run as root unless told
#     SLURMRESTD_SECURITY=disable_user_check; here it serves the tests' root jobs.
set -euo pipefail

CONF_DIR=/etc/slurm
CONF="$CONF_DIR/slurm.conf"
RUN_DIR=/run/sluice-slurm
WAIT_S="${SLUICE_SLURM_WAIT_S:-60}"
LOG_DIR=/var/log/slurm
RESTD_SOCKET="$RUN_DIR/slurmrestd.sock"

log() { printf '[slurm-setup] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_packages() {
    if command -v slurmctld >/dev/null 2>&1 && command -v slurmd >/dev/null 2>&1 \
        && command -v munged >/dev/null 2>&1 && command -v sbatch >/dev/null 2>&1 \
        && command -v slurmrestd >/dev/null 2>&1 && command -v curl >/dev/null 2>&1; then
        return 0
    fi
    log "installing slurm-wlm munge slurmrestd curl"
    as_root apt-get update
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y slurm-wlm munge slurmrestd curl
}

write_conf() {
    local host cpus mem_mb conf
    host="$(hostname -s)"
    cpus="$(nproc --all)"
    mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
    [ "$mem_mb" -gt 512 ] || mem_mb=512
    conf="$(cat <<EOF
# Written by sluice .ci/slurm-setup.sh: a one-node cluster for tests.
ClusterName=sluice
SlurmctldHost=$host
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldPort=6817
SlurmdPort=6818
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
SchedulerParameters=sched_min_interval=200000
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
MinJobAge=300
KillWait=30
InactiveLimit=0
SlurmdTimeout=300
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
)"
    as_root mkdir -p "$CONF_DIR" /var/spool/slurmctld /var/spool/slurmd "$LOG_DIR" "$RUN_DIR"
    if [ -f "$CONF" ] && [ "$(cat "$CONF")" = "$conf" ]; then
        return 1  # unchanged
    fi
    printf '%s\n' "$conf" | as_root tee "$CONF" >/dev/null
    log "wrote $CONF (node $host: $cpus CPUs, $mem_mb MB)"
    return 0
}

running() {  # $1 = pid file
    [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null
}

ensure_munge() {
    if [ ! -s /etc/munge/munge.key ]; then
        as_root mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
            || as_root dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
        as_root chmod 0400 /etc/munge/munge.key
    fi
    as_root chown munge:munge /etc/munge/munge.key 2>/dev/null || true
    as_root mkdir -p /run/munge /var/log/munge /var/lib/munge
    as_root chown munge:munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return 0
    fi
    log "starting munged"
    if id munge >/dev/null 2>&1; then
        as_root runuser -u munge -- /usr/sbin/munged
    else
        as_root /usr/sbin/munged --force
    fi
    local deadline=$((SECONDS + 10))
    until munge -n 2>/dev/null | unmunge >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { log "ERROR: munged does not answer"; return 1; }
        sleep 0.2
    done
}

start_daemon() {  # $1 = name, $2 = pid file, rest = flags
    local name="$1" pidfile="$2"
    shift 2
    if running "$pidfile"; then
        return 0
    fi
    log "starting $name"
    as_root "$name" "$@"
}

node_state() {
    sinfo -h -N -o '%t' 2>/dev/null | head -n 1
}

wait_idle() {
    local deadline=$((SECONDS + WAIT_S)) state=""
    while [ "$SECONDS" -lt "$deadline" ]; do
        state="$(node_state)"
        case "$state" in
            idle|mix|alloc) return 0 ;;
            down*|drain*|drng*) as_root scontrol update NodeName="$(hostname -s)" State=RESUME 2>/dev/null || true ;;
        esac
        sleep 0.5
    done
    log "ERROR: node state is '${state:-unknown}' after ${WAIT_S}s; see $LOG_DIR/slurmctld.log and slurmd.log"
    tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" >&2 || true
    return 1
}

ensure_slurmrestd() {
    if curl -sf --max-time 2 --unix-socket "$RESTD_SOCKET" http://slurmrestd/slurm/v0.0.38/ping >/dev/null 2>&1; then
        return 0
    fi
    log "starting slurmrestd on unix:$RESTD_SOCKET"
    as_root rm -f "$RESTD_SOCKET"
    # exec all the way down, so the pid file names slurmrestd itself
    (exec env SLURMRESTD_SECURITY=disable_user_check setsid slurmrestd -a rest_auth/local \
        -s openapi/v0.0.38 "unix:$RESTD_SOCKET" >>"$LOG_DIR/slurmrestd.log" 2>&1 </dev/null) &
    local pid=$!
    as_root sh -c "echo $pid >$RUN_DIR/slurmrestd.pid"
    local deadline=$((SECONDS + 20))
    until curl -sf --max-time 2 --unix-socket "$RESTD_SOCKET" http://slurmrestd/slurm/v0.0.38/ping >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || { log "ERROR: slurmrestd does not answer; see $LOG_DIR/slurmrestd.log"; return 1; }
        sleep 0.2
    done
}

stop_all() {
    local pidfile
    for pidfile in "$RUN_DIR/slurmrestd.pid" "$RUN_DIR/slurmd.pid" "$RUN_DIR/slurmctld.pid"; do
        if running "$pidfile"; then
            log "stopping $(basename "$pidfile" .pid)"
            as_root kill "$(cat "$pidfile")" || true
        fi
    done
}

if [ "${1:-}" = "stop" ]; then
    stop_all
    exit 0
fi

install_packages
if write_conf; then
    # a changed configuration is read at start: restart what runs
    stop_all
    sleep 1
fi
ensure_munge
start_daemon slurmctld "$RUN_DIR/slurmctld.pid"
start_daemon slurmd "$RUN_DIR/slurmd.pid"
wait_idle
ensure_slurmrestd
log "ready: $(sinfo -h -N -o '%N %t %c CPUs %m MB'), slurmrestd on unix:$RESTD_SOCKET"
