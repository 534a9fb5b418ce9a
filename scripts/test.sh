#!/usr/bin/env bash
# Runs every test of the workspace, fault-injection and end-to-end tests included.
# Works on a fresh machine: installs what the tests need first (scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# The web UI's own logic (Vitest); its type check ran in setup.sh's build.
(cd ui && npm test --silent)
# --all-features turns on the `failpoints` features, which compile the crash tests.
cargo nextest run --workspace --all-features --no-fail-fast "$@"
# The Kubernetes deployment: helm lint/template, kubernetes-validate, command lines.
./scripts/check-deploy.sh
