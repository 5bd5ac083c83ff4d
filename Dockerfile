# pcaptool sidecar image: capture, translate, rotate, compress and upload packet captures
# next to an app on Cloud Run, GKE or App Engine Flex. Configured by PCAP_* env vars only
# (see docs/sidecar.md).
#
#   docker build -t pcaptool .                                # from debian:bookworm-slim
#   docker build --build-arg BASE=my-mirror/debian:bookworm-slim -t pcaptool .
ARG BASE=debian:bookworm-slim

# ---------------------------------------------------------------- build stage
FROM ${BASE} AS build
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt

# Unpinned Debian packages on purpose: the stable release's security updates apply.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Trust extra CAs (a TLS-intercepting proxy in front of PyPI) for this stage only.
COPY docker/extra-ca-certificates/ /usr/local/share/ca-certificates/extra/
RUN update-ca-certificates

COPY . /src
# The package is built into a wheel, then installed with its dependencies (all of them
# ship manylinux wheels: no compiler here either) into a virtualenv that the final stage
# copies whole. pip and setuptools are removed from it afterwards: nothing installs there.
RUN python3 -m venv /opt/wheelbuild \
 && /opt/wheelbuild/bin/pip wheel --no-deps --wheel-dir /dist /src \
 && python3 -m venv /opt/pcaptool \
 && /opt/pcaptool/bin/pip install --only-binary=:all: /dist/pcaptool-*.whl \
 && /opt/pcaptool/bin/pip uninstall -y pip setuptools \
 && /opt/pcaptool/bin/pcaptool --version

# ---------------------------------------------------------------- final stage
FROM ${BASE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ENV DEBIAN_FRONTEND=noninteractive
# python3 only (the virtualenv links to /usr/bin/python3); libpcap comes inside the
# pcapy-ng wheel; no compilers, no pip.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log

COPY --from=build /opt/pcaptool /opt/pcaptool
COPY entrypoint.sh /entrypoint.sh

ENV PATH=/opt/pcaptool/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PCAP_HC_PORT=12345

# Cloud Run's startup probe is a TCP check on PCAP_HC_PORT; Docker's own health check
# asks the same question without a socket.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["pcaptool", "healthcheck", "probe"]

EXPOSE 12345
ENTRYPOINT ["/entrypoint.sh"]
