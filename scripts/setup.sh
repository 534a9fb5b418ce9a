#!/usr/bin/env bash
# Installs what building and testing Shorthorn needs on a fresh Debian machine:
# protoc for the gRPC protos, and the real clients the end-to-end tests drive.
# Does nothing when everything is already there.
set -euo pipefail

packages=(protobuf-compiler qemu-utils libnbd-bin fio)
commands=(protoc qemu-io nbdinfo fio)
missing=()
for i in "${!commands[@]}"; do
    command -v "${commands[$i]}" >/dev/null 2>&1 || missing+=("${packages[$i]}")
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
