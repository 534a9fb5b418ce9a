#!/usr/bin/env bash
# Installs what building and testing Shorthorn needs on a fresh Debian machine:
# protoc for the gRPC protos, and the real clients the end-to-end tests drive
# (qemu-io, nbdinfo/nbdcopy/nbdfuse, nbdsh's python module, fio, mkfs.ext4, and s3s-fs,
# an S3-compatible server, for the backup tests; etcd for the multi-node manager tests;
# mkfs.xfs and csi-sanity for the CSI driver's tests; helm and kubernetes-validate for
# the deployment's check; Chromium, the UI's npm packages and its build for the web UI,
# which the binary embeds and its end-to-end tests drive).
# Does nothing when everything is already there.
set -euo pipefail

packages=(protobuf-compiler qemu-utils libnbd-bin fio python3-libnbd e2fsprogs fuse3 iproute2 etcd-server xfsprogs chromium fonts-dejavu-core)
probes=("command -v protoc" "command -v qemu-io" "command -v nbdinfo" "command -v fio"
        "/usr/bin/python3 -c 'import nbd'" "command -v mkfs.ext4" "command -v fusermount3"
        "command -v ip" "command -v etcd" "command -v mkfs.xfs || test -x /usr/sbin/mkfs.xfs"
        "command -v chromium" "test -d /usr/share/fonts/truetype/dejavu")
missing=()
for i in "${!packages[@]}"; do
    bash -c "${probes[$i]}" >/dev/null 2>&1 || missing+=("${packages[$i]}")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    "${sudo_cmd[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest" >&2
    cargo install --locked cargo-nextest
fi

# The S3-compatible server the backup tests and benchmark run against (on loopback).
if ! command -v s3s-fs >/dev/null 2>&1 && [ ! -x "${CARGO_HOME:-$HOME/.cargo}/bin/s3s-fs" ]; then
    echo "installing s3s-fs (S3 test server)" >&2
    cargo install --locked s3s-fs --version 0.14.1 --features binary
fi
# csi-sanity, the CSI conformance suite the CSI driver's test runs (pinned), where the
# tests find it: on PATH (/usr/local/bin as root, else the Go bin directory).
CSI_SANITY_VERSION=v5.6.0
if ! command -v csi-sanity >/dev/null 2>&1; then
    echo "installing csi-sanity $CSI_SANITY_VERSION" >&2
    gobin="$(go env GOPATH)/bin"
    [ "$(id -u)" -ne 0 ] || gobin=/usr/local/bin
    GOBIN="$gobin" go install "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$CSI_SANITY_VERSION"
fi
# helm and kubernetes-validate for the deployment's check (scripts/check-deploy.sh), pinned.
HELM_VERSION=v4.3.2
if ! command -v helm >/dev/null 2>&1; then
    echo "installing helm $HELM_VERSION" >&2
    gobin="$(go env GOPATH)/bin"
    [ "$(id -u)" -ne 0 ] || gobin=/usr/local/bin
    GOBIN="$gobin" go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
fi
command -v kubernetes-validate >/dev/null 2>&1 || python3 -m pip install --quiet kubernetes-validate==1.37.0
python3 -c 'import schemathesis' 2>/dev/null || python3 -m pip install --quiet schemathesis

# The web UI (ui/): its npm packages as locked, and its build, which crates/ui embeds in
# the binary (a build without it serves a page saying how to build it).
if ! (cd ui && npm ci --no-audit --no-fund --loglevel=error && npm run build --silent) >/tmp/shorthorn-ui-build.log 2>&1; then
    cat /tmp/shorthorn-ui-build.log >&2
    echo "building the web UI failed (log above)" >&2
    exit 1
fi
