#!/usr/bin/env bash
# Make a real Docker engine available, from a fresh Debian machine (CI, as root) or a
# developer box, and build the local images the tests and bundled examples use.
#
# Idempotent: every step checks before it acts, so running it twice is cheap (~0.1 s when
# everything is already there).
#
#   .ci/docker-setup.sh            # install if missing, start dockerd if down, build images
#   SLUICE_DOCKERD_LOG=/tmp/x.log  # where dockerd writes (default /tmp/sluice-dockerd.log)
#   SLUICE_DOCKER_WAIT_S=60        # deadline for `docker info` after starting dockerd
#
# Why these dockerd flags (measured on the project's 2-core Debian 12 VMs, kernel 6.x,
# cgroup v1 hybrid, ext4 root):
#   * First try: NO extra flags. The stock daemon works here: the overlay2 storage driver is
#     fine on an ext4 root (overlay is in /proc/filesystems), iptables (nf_tables) accepts the
#     docker0 bridge rules, and the cgroupfs driver gives memory limits and OOM kills that
#     `docker inspect` reports (State.OOMKilled=true, exit 137). Keeping the default bridge
#     matters: workflows may set `network: none` but the default must behave like real Docker.
#   * Fallback, only if the first try does not answer within the deadline (nested containers,
#     no overlay module, no netfilter): `--storage-driver=vfs` (works on any filesystem, just
#     copies layers; our busybox image is 1 MB so it costs nothing), `--iptables=false
#     --ip6tables=false` (no NAT rules needed: nothing can be pulled, and tests use `none`
#     or the bridge without outbound traffic). The log says which mode came up.
#   * Nothing can be pulled in CI (no registry, no DNS), so the images are built locally with
#     `docker import` from busybox-static, under the real public names the examples use.
set -euo pipefail

LOG="${SLUICE_DOCKERD_LOG:-/tmp/sluice-dockerd.log}"
WAIT_S="${SLUICE_DOCKER_WAIT_S:-60}"
# Images built here, all from busybox-static. To add another public name that the bundled
# examples use (it will be a busybox userland, so only for examples that need nothing more),
# append it to this list.
IMAGES=("busybox:1.36")

log() { printf '[docker-setup] %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

install_packages() {
    local missing=()
    command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
    # The image needs the static build: a dynamic /bin/busybox would miss its libc inside.
    dpkg -s busybox-static >/dev/null 2>&1 || missing+=(busybox-static)
    # Remote Docker environments' tests: a TLS endpoint (certificates made with openssl) and a
    # private sshd for ssh:// endpoints (started by the tests themselves, never as a service).
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
    if [ "${#missing[@]}" -gt 0 ]; then
        log "installing ${missing[*]}"
        as_root apt-get update
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y "${missing[@]}"
    fi
}

wait_for_docker() {
    local deadline=$((SECONDS + $1))
    while [ "$SECONDS" -lt "$deadline" ]; do
        docker info >/dev/null 2>&1 && return 0
        sleep 0.5
    done
    return 1
}

start_dockerd() {
    # $@ = extra flags. setsid + nohup: the daemon outlives this script and the CI step.
    log "starting dockerd $* (log: $LOG)"
    as_root setsid nohup dockerd "$@" >>"$LOG" 2>&1 </dev/null &
}

ensure_dockerd() {
    if docker info >/dev/null 2>&1; then
        log "dockerd already answers"
        return 0
    fi
    # A stale pid file from a killed daemon makes a new one refuse to start.
    if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
        as_root rm -f /var/run/docker.pid
    fi
    if ! pgrep -x dockerd >/dev/null 2>&1; then
        start_dockerd
    else
        log "dockerd is running but not answering yet; waiting"
    fi
    if wait_for_docker "$WAIT_S"; then
        log "dockerd up (default flags)"
        return 0
    fi
    log "dockerd did not answer within ${WAIT_S}s with default flags; last log lines:"
    tail -n 15 "$LOG" >&2 || true
    local pid
    pid="$(pgrep -x dockerd || true)"
    if [ -n "$pid" ]; then
        as_root kill "$pid" || true
        sleep 2
    fi
    as_root rm -f /var/run/docker.pid
    start_dockerd --storage-driver=vfs --iptables=false --ip6tables=false
    if wait_for_docker "$WAIT_S"; then
        log "dockerd up (fallback: vfs, no iptables)"
        return 0
    fi
    log "ERROR: dockerd did not start; see $LOG"
    tail -n 30 "$LOG" >&2 || true
    return 1
}

build_images() {
    local ref root
    for ref in "${IMAGES[@]}"; do
        if docker image inspect "$ref" >/dev/null 2>&1; then
            log "image $ref present"
            continue
        fi
        root="$(mktemp -d)"
        bash "$(dirname "$0")/busybox-rootfs.sh" "$root"
        tar -C "$root" -c . | docker import \
            --change 'CMD ["sh"]' \
            --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
            --message "sluice local build from busybox-static" \
            - "$ref" >/dev/null
        rm -rf "$root"
        log "image $ref built"
    done
}

install_packages
ensure_dockerd
build_images
docker run --rm --network none "${IMAGES[0]}" true
log "ready: $(docker version --format '{{.Server.Version}} (API {{.Server.APIVersion}})')"
