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
  # One retry: a mirror hiccup should not fail a CI run.
  for attempt in 1 2; do
    if debootstrap --variant=minbase bookworm "${work}/root" "${mirror}" >"${work}/debootstrap.log" 2>&1; then
      break
    fi
    tail -n 20 "${work}/debootstrap.log" >&2
    if [ "${attempt}" = 2 ]; then
      echo "make-base-image: debootstrap failed" >&2
      exit 1
    fi
    rm -rf "${work}/root"
    sleep 5
  done
  # Slim like the official debian:*-slim images: no apt lists, caches or downloaded
  # .debs, and dpkg told to skip docs, man pages and translations in later installs.
  rm -rf "${work}/root/var/lib/apt/lists/"* "${work}/root/var/cache/apt/"*.bin \
    "${work}/root/var/cache/apt/archives/"*.deb \
    "${work}/root/usr/share/doc/"* "${work}/root/usr/share/man/"* "${work}/root/usr/share/info/"*
  find "${work}/root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  cat >"${work}/root/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
CFG
  tar -C "${work}/root" --numeric-owner -cf "${tarball}.tmp" .
  mv "${tarball}.tmp" "${tarball}"
fi

# Import only when the tag is missing or came from another tarball: a re-import makes a
# new image id, which would throw away the layer cache of every build on top of it.
sum="$(sha256sum "${tarball}" | cut -c1-64)"
have="$(docker image inspect --format '{{ index .Config.Labels "pcaptool.rootfs.sha256" }}' "${tag}" 2>/dev/null || true)"
if [ "${have}" != "${sum}" ]; then
  docker import --change 'CMD ["/bin/bash"]' --change "LABEL pcaptool.rootfs.sha256=${sum}" \
    "${tarball}" "${tag}" >/dev/null
fi
echo "${tag}"
