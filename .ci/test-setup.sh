#!/usr/bin/env bash
# Everything the tests need beyond Python packages, on a fresh Debian machine (as root), idempotent:
# the Docker engine and its local images, a second Docker daemon (environments with several
# hosts), a Podman service with the same image, a one-node Slurm
# cluster, and Debian's chromium for the dashboard's browser tests (Playwright drives it; it never
# downloads a browser).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v chromium >/dev/null || {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium
}
bash .ci/docker-setup.sh
bash .ci/docker-b-setup.sh
bash .ci/podman-setup.sh
bash .ci/slurm-setup.sh
