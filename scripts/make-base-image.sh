#!/usr/bin/env bash
# Builds a Debian bookworm base image without any image registry: debootstrap (minbase)
# from the Debian mirror, then `docker import`. The root filesystem tarball is cached so
# reruns only import it.
#
#   scripts/make-base-image.sh [TAG] [CACHE_DIR]
#   default TAG pcaptool-base:bookworm, CACHE_DIR /var/cache/pcaptool-test
# DOCKER_HOST is honoured (the tests point it at their own dockerd).
set -euo pipefail

tag="${1:-pcaptool-base:bookworm}"
cache="${2:-/var/cache/pcaptool-test}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
tarball="${cache}/bookworm-minbase.tar"

mkdir -p "${cache}"
if [ ! -s "${tarball}" ]; then
  work="$(mktemp -d "${cache}/rootfs.XXXXXX")"
  trap 'rm -rf "${work}"' EXIT
  debootstrap --variant=minbase bookworm "${work}/root" "${mirror}" >"${work}/debootstrap.log" 2>&1 || {
    tail -n 20 "${work}/debootstrap.log" >&2
    echo "make-base-image: debootstrap failed" >&2
    exit 1
  }
  # A slim image keeps no apt lists or caches (as the official debian:*-slim images do).
  rm -rf "${work}/root/var/lib/apt/lists/"* "${work}/root/var/cache/apt/"*.bin
  tar -C "${work}/root" --numeric-owner -cf "${tarball}.tmp" .
  mv "${tarball}.tmp" "${tarball}"
fi

docker import --change 'CMD ["/bin/bash"]' "${tarball}" "${tag}" >/dev/null
echo "${tag}"
