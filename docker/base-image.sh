#!/usr/bin/env bash
# Makes sure the container engine has the base image `debian:bookworm` that every Containerfile
# here starts from. In order: it is already there; a registry has it (one bounded pull); else it
# is made from Debian's own packages with debootstrap (minbase variant) and imported under the
# same name, docker.io/library/debian:bookworm, so the Containerfiles stay the same either way.
# The debootstrap tree is cached as a tarball (XACOORD_CACHE_DIR, default
# /var/cache/xacoord): a later import takes seconds instead of a minute of downloads.
# Usage: docker/base-image.sh ENGINE        (podman or docker; root, as for the engine)
set -euo pipefail

ENGINE=${1:?usage: docker/base-image.sh podman|docker}
NAME=docker.io/library/debian:bookworm
CACHE=${XACOORD_CACHE_DIR:-/var/cache/xacoord}
TARBALL=$CACHE/debian-bookworm-minbase.tar
MIRROR=${XACOORD_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PULL_TIMEOUT_S=30

say() { printf 'base-image: %s\n' "$*" >&2; }

have_image() { "$ENGINE" image inspect "$NAME" >/dev/null 2>&1; }

# The tree as the official image has it: the three suites, no package lists, no caches.
make_tarball() {
    local dir
    command -v debootstrap >/dev/null || {
        say "debootstrap is missing (apt-get install debootstrap)"
        exit 1
    }
    mkdir -p "$CACHE"
    dir=$(mktemp -d "$CACHE/rootfs.XXXXXX")
    say "no registry has $NAME: building it with debootstrap from $MIRROR (about a minute)"
    if ! debootstrap --variant=minbase bookworm "$dir" "$MIRROR" >"$dir.log" 2>&1; then
        tail -n 20 "$dir.log" >&2
        rm -rf "$dir"
        say "debootstrap failed (log: $dir.log)"
        exit 1
    fi
    cat >"$dir/etc/apt/sources.list" <<SOURCES
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
    chroot "$dir" apt-get clean
    rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/log/*.log
    tar -C "$dir" --numeric-owner -cf "$TARBALL.tmp" .
    mv "$TARBALL.tmp" "$TARBALL"
    rm -rf "$dir" "$dir.log"
}

if have_image; then
    exit 0
fi
if timeout "$PULL_TIMEOUT_S" "$ENGINE" pull -q "$NAME" >/dev/null 2>&1; then
    say "pulled $NAME"
    exit 0
fi
[ -s "$TARBALL" ] || make_tarball
# Quiet unless it fails (docker import has no --quiet).
out=$("$ENGINE" import --change 'CMD ["/bin/bash"]' "$TARBALL" "$NAME" 2>&1) || {
    printf '%s\n' "$out" >&2
    say "importing $TARBALL failed"
    exit 1
}
say "imported $NAME from $TARBALL"
