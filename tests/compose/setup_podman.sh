#!/usr/bin/env bash
# Make podman usable for the compose harness on a machine without Docker.
#
# Idempotent: installs podman, runc and debootstrap with apt only when one is missing,
# installs podman-compose into the current Python environment only when it is missing,
# then checks that podman answers with the harness's configuration (containers.conf
# next to this script, passed through CONTAINERS_CONF; the machine's own files are not
# changed).
#
# Usage: tests/compose/setup_podman.sh [PYTHON]   (PYTHON defaults to python3)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${1:-python3}"
podman_compose_version="1.6.0"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"

log() { printf '[setup-podman] %s\n' "$*" >&2; }

missing=()
for tool in podman runc debootstrap; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        log "missing ${missing[*]}; install them as root: apt-get install podman runc debootstrap"
        exit 1
    fi
    log "installing ${missing[*]} with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends podman runc debootstrap \
        containernetworking-plugins conmon slirp4netns fuse-overlayfs uidmap iptables >/dev/null
fi

if ! "$python" -c 'import podman_compose' >/dev/null 2>&1; then
    log "installing podman-compose==$podman_compose_version into $("$python" -c 'import sys; print(sys.prefix)')"
    "$python" -m pip install --quiet "podman-compose==$podman_compose_version"
fi

if ! podman info --format '{{.Host.OCIRuntime.Name}} {{.Host.CgroupManager}}' >/dev/null; then
    log "podman does not answer (see the error above)"
    exit 1
fi
log "podman $(podman version --format '{{.Client.Version}}'), runtime $(podman info --format '{{.Host.OCIRuntime.Name}}'), cgroups $(podman info --format '{{.Host.CgroupManager}}'), podman-compose $("$python" -m podman_compose version 2>/dev/null | head -n1 | awk '{print $NF}')"
