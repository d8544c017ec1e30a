#!/usr/bin/env bash
# A second, real Docker daemon on this machine, for the tests of environments with several
# Docker hosts (tests/batch/test_scaling_hosts.py): its own socket, data root, exec root (and
# so its own containerd) and pid file, the same cgroup driver as the main one, and no iptables
# rules (the tests' containers use `network: none`). The busybox:1.36 image is imported into it
# from the same busybox-static rootfs as .ci/docker-setup.sh builds.
#
# Its default bridge is its own, docker-b0, made here: never `--bridge=none`, because a dockerd
# started that way deletes the docker0 interface, which is the MAIN daemon's bridge (its
# containers then fail with "could not find bridge docker0").
#
# Idempotent: a daemon that answers is left alone.
#
#   .ci/docker-b-setup.sh         # start it if down, import the image if missing
#   .ci/docker-b-setup.sh stop    # stop the daemon this script started (.ci/run's trap)
#   SLUICE_DOCKER_B_SOCK=/run/docker-b.sock  SLUICE_DOCKER_B_LOG=/tmp/sluice-dockerd-b.log
set -euo pipefail

SOCK="${SLUICE_DOCKER_B_SOCK:-/run/docker-b.sock}"
LOG="${SLUICE_DOCKER_B_LOG:-/tmp/sluice-dockerd-b.log}"
PIDFILE=/run/docker-b.pid
IMAGE="busybox:1.36"
WAIT_S="${SLUICE_DOCKER_WAIT_S:-60}"
BRIDGE=docker-b0
BRIDGE_CIDR="${SLUICE_DOCKER_B_BRIDGE:-172.30.213.1/24}"  # on this machine only, no NAT

log() { printf '[docker-b-setup] %s\n' "$*" >&2; }
answers() { docker -H "unix://$SOCK" info >/dev/null 2>&1; }

stop() {
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        local pid
        pid="$(cat "$PIDFILE")"
        log "stopping dockerd (pid $pid)"
        kill "$pid"
        for _ in $(seq 1 40); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.5
        done
    fi
    ip link del "$BRIDGE" 2>/dev/null || true
    return 0
}

if [ "${1:-}" = stop ]; then
    stop
    exit 0
fi

command -v ip >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iproute2; }
if answers; then
    log "dockerd at $SOCK already answers"
else
    if [ -f "$PIDFILE" ] && ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        rm -f "$PIDFILE"
    fi
    mkdir -p /var/lib/docker-b /run/docker-b
    if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
        ip link add "$BRIDGE" type bridge
        ip addr add "$BRIDGE_CIDR" dev "$BRIDGE"
        ip link set "$BRIDGE" up
    fi
    # the main daemon's cgroup and storage drivers (.ci/docker-setup.sh may have fallen back to
    # vfs), so limits, OOM kills and layers behave the same on both
    driver="$(docker info --format '{{.CgroupDriver}}' 2>/dev/null || echo cgroupfs)"
    storage="$(docker info --format '{{.Driver}}' 2>/dev/null || echo overlay2)"
    log "starting dockerd at $SOCK (cgroup driver $driver, storage $storage; log: $LOG)"
    setsid nohup dockerd --host "unix://$SOCK" --data-root /var/lib/docker-b --exec-root /run/docker-b \
        --pidfile "$PIDFILE" --bridge="$BRIDGE" --iptables=false --ip6tables=false \
        --exec-opt "native.cgroupdriver=$driver" --storage-driver="$storage" >>"$LOG" 2>&1 </dev/null &
    deadline=$((SECONDS + WAIT_S))
    until answers; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "ERROR: dockerd at $SOCK did not answer within ${WAIT_S}s; last log lines:"
            tail -n 20 "$LOG" >&2 || true
            exit 1
        fi
        sleep 0.5
    done
fi

if docker -H "unix://$SOCK" image inspect "$IMAGE" >/dev/null 2>&1; then
    log "image $IMAGE present"
else
    root="$(mktemp -d)"
    bash "$(dirname "$0")/busybox-rootfs.sh" "$root"
    tar -C "$root" -c . | docker -H "unix://$SOCK" import \
        --change 'CMD ["sh"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --message "sluice local build from busybox-static" \
        - "$IMAGE" >/dev/null
    rm -rf "$root"
    log "image $IMAGE imported"
fi
docker -H "unix://$SOCK" run --rm --network none "$IMAGE" true
log "ready: $SOCK"
