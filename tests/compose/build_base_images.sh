#!/usr/bin/env bash
# Build the base images the project's Dockerfiles and compose file start from, without
# a registry:
#
#   localhost/debian:bookworm-slim            debootstrapped Debian (minbase), imported
#   localhost/blueprint-standin/python:3.11   stand-in for the official Python slim image
#   localhost/blueprint-standin/redis-search  stand-in for a Redis with vector search
#
# The harness then tags the stand-ins with the exact names the Dockerfiles (FROM) and
# compose.yaml (image:) use. Each image is skipped when it already exists; FORCE=1
# rebuilds all three. Needs root (debootstrap) and the machine's CA bundle (pip inside
# the builds reaches the package index only with it, see CA_BUNDLE).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$here/containers.conf}"
ca_bundle="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"
force="${FORCE:-0}"

debian_image="localhost/debian:bookworm-slim"
python_image="localhost/blueprint-standin/python:3.11"
redis_image="localhost/blueprint-standin/redis-search:latest"

log() { printf '[base-images] %s\n' "$*" >&2; }

needs_build() {
    [[ "$force" == 1 ]] && return 0
    if podman image exists "$1"; then
        log "$1 exists, skipping (FORCE=1 rebuilds)"
        return 1
    fi
    return 0
}

# The Debian mirror apt on this machine already uses: the first URI of a deb822 source
# or of a one-line `deb` entry, so no mirror name is written into this script.
debian_mirror() {
    local uri=""
    if compgen -G '/etc/apt/sources.list.d/*.sources' >/dev/null; then
        uri="$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources)"
    fi
    if [[ -z "$uri" && -f /etc/apt/sources.list ]]; then
        uri="$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' /etc/apt/sources.list)"
    fi
    if [[ -z "$uri" ]]; then
        log "no Debian mirror found in /etc/apt/sources.list(.d); set DEBIAN_MIRROR"
        exit 1
    fi
    printf '%s\n' "$uri"
}

timed() {
    local label="$1"
    shift
    local start=$SECONDS
    "$@"
    log "$label took $((SECONDS - start)) s"
}

build_debian() {
    local rootfs
    rootfs="$(mktemp -d /var/tmp/blueprint-rootfs.XXXXXX)"
    local mirror="${DEBIAN_MIRROR:-$(debian_mirror)}"
    log "debootstrap bookworm (minbase) from the machine's apt mirror"
    debootstrap --variant=minbase --include=ca-certificates bookworm "$rootfs" "$mirror" >/dev/null
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | podman import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["bash"]' --change 'LABEL blueprint.standin=debian' --quiet - "$debian_image" >/dev/null
    rm -rf "$rootfs"
}

build_standin() {
    local image="$1" folder="$2"
    podman build --quiet --pull=never \
        --volume "$ca_bundle:/etc/ssl/certs/ca-certificates.crt:ro" \
        --build-arg "DEBIAN_IMAGE=$debian_image" \
        --build-arg "PYTHON_IMAGE=$python_image" \
        --tag "$image" "$here/images/$folder" >/dev/null
    # the redis stand-in's wheel stage is only a means; drop it
    podman image prune --force --filter label=blueprint.standin.stage=wheels >/dev/null
}

if needs_build "$debian_image"; then
    timed "$debian_image" build_debian
    force_children=1
fi
if [[ "${force_children:-0}" == 1 ]] || needs_build "$python_image"; then
    timed "$python_image" build_standin "$python_image" python
    force_children=1
fi
if [[ "${force_children:-0}" == 1 ]] || needs_build "$redis_image"; then
    timed "$redis_image" build_standin "$redis_image" redis
fi
