#!/usr/bin/env bash
# Make podman usable for the compose harness on a machine without Docker.
#
# Idempotent: installs podman and what it needs (runc, the CNI plugins with DNS,
# debootstrap) with apt only when a package is missing,
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

# Containers on a compose network find each other by service name only with a DNS
# plugin: podman 4.3's CNI backend needs dnsname (a Recommends of Debian's podman,
# which --no-install-recommends would skip).
packages=(podman runc debootstrap containernetworking-plugins
    golang-github-containernetworking-plugin-dnsname conmon slirp4netns fuse-overlayfs
    uidmap iptables)
missing=()
if command -v dpkg-query >/dev/null 2>&1; then
    for package in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$package")
    done
else
    for tool in podman runc debootstrap; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
fi
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        log "missing ${missing[*]}; install them as root (apt-get install ${packages[*]})"
        exit 1
    fi
    log "installing ${missing[*]} with apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
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
