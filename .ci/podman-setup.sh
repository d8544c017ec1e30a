#!/usr/bin/env bash
# A real Podman service for the Podman compute environment (and `runtime: podman` on the Slurm
# node): Debian's podman, the local busybox:1.36 image in its store, and
# `podman system service` on its Docker-compatible socket, started in the background.
#
# Idempotent: each step checks before it acts.
#
#   .ci/podman-setup.sh          # install if missing, build the image, start the service
#   .ci/podman-setup.sh stop     # stop the service this script started (pid file below)
#
# Choices (Debian 12's podman 4.3, as root, on the project's 2-core VMs):
#   * Rootful, socket /run/podman/podman.sock (Podman's default for root), no systemd unit:
#     CI machines and containers often run no systemd; `--time=0` keeps it up until stopped.
#   * Nothing can be pulled (no registry, no DNS): the image is imported from busybox-static,
#     as .ci/docker-setup.sh does for Docker; Podman stores it as localhost/busybox:1.36 and a
#     short name finds it.
#   * Where this process may not raise its resource limits (no CAP_SYS_RESOURCE: sandboxes,
#     some CI runners), rootful Podman's own defaults (nofile 1048576, nproc 4194304) make runc
#     fail with "error setting rlimit type 7: operation not permitted". Only then, a drop-in
#     /etc/containers/containers.conf.d/sluice-ulimits.conf sets default_ulimits no higher than
#     the limits Podman runs under (its nproc is capped at 32768); the site's own
#     containers.conf is left as it is.
set -euo pipefail
cd "$(dirname "$0")"

RUN_DIR=/run/sluice-podman
SOCKET=/run/podman/podman.sock
LOG="${SLUICE_PODMAN_LOG:-/tmp/sluice-podman.log}"
IMAGE="busybox:1.36"
CONF=/etc/containers/containers.conf.d/sluice-ulimits.conf

log() { printf '[podman-setup] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

running() {
    [ -f "$RUN_DIR/service.pid" ] && kill -0 "$(cat "$RUN_DIR/service.pid")" 2>/dev/null
}

if [ "${1:-}" = "stop" ]; then
    if running; then
        log "stopping podman system service"
        as_root kill "$(cat "$RUN_DIR/service.pid")" || true
    fi
    exit 0
fi

missing=()
command -v podman >/dev/null 2>&1 || missing+=(podman)
dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
command -v curl >/dev/null 2>&1 || missing+=(curl)  # asks the service's socket whether it is up
if [ "${#missing[@]}" -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root apt-get update
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y "${missing[@]}"
fi

if ! as_root podman image exists "$IMAGE"; then
    root="$(mktemp -d)"
    bash busybox-rootfs.sh "$root"
    tar -C "$root" -c . | as_root podman import \
        --change 'CMD ["sh"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --message "sluice local build from busybox-static" \
        - "$IMAGE" >/dev/null
    rm -rf "$root"
    log "image $IMAGE built"
fi

probe() { as_root podman run --rm --network none "$IMAGE" true 2>&1; }
if ! out="$(probe)"; then
    if [[ "$out" == *"error setting rlimit"* ]] && [ ! -f "$CONF" ]; then
        nofile="$(ulimit -Hn)"
        nproc="$(ulimit -Hu)"
        [ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
        log "this process may not raise rlimits; writing default_ulimits (nofile=$nofile, nproc=$nproc) to $CONF"
        as_root mkdir -p "$(dirname "$CONF")"
        printf '# Written by sluice .ci/podman-setup.sh: limits this machine lets runc set\n[containers]\ndefault_ulimits = ["nofile=%s:%s", "nproc=%s:%s"]\n' \
            "$nofile" "$nofile" "$nproc" "$nproc" | as_root tee "$CONF" >/dev/null
        out="$(probe)" || { log "ERROR: podman run still fails: $out"; exit 1; }
    else
        log "ERROR: podman run fails: $out"
        exit 1
    fi
fi

ping() { curl -sf --max-time 2 --unix-socket "$SOCKET" http://podman/_ping >/dev/null 2>&1; }
if ! ping; then
    as_root mkdir -p "$RUN_DIR" "$(dirname "$SOCKET")"
    log "starting podman system service on $SOCKET (log: $LOG)"
    # exec all the way down (setsid, nohup, podman keep the pid), so the pid file names the service
    sudo=""
    [ "$(id -u)" -eq 0 ] || sudo=sudo
    (exec $sudo setsid nohup podman system service --time=0 "unix://$SOCKET" >>"$LOG" 2>&1 </dev/null) &
    echo $! | as_root tee "$RUN_DIR/service.pid" >/dev/null
    deadline=$((SECONDS + 30))
    until ping; do
        [ "$SECONDS" -lt "$deadline" ] || { log "ERROR: the service does not answer; see $LOG"; exit 1; }
        sleep 0.2
    done
fi
log "ready: $(podman --version), $SOCKET"
