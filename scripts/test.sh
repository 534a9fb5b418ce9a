#!/usr/bin/env bash
# Runs every test of the workspace, fault-injection tests included. Works on a fresh
# machine: installs what the tests need first.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo nextest --version >/dev/null 2>&1; then
    echo "cargo-nextest not found; installing it" >&2
    cargo install --locked cargo-nextest
fi

# --all-features turns on the `failpoints` features, which compile the crash tests.
cargo nextest run --workspace --all-features --no-fail-fast "$@"
