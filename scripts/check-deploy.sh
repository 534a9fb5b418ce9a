#!/usr/bin/env bash
# Checks the Kubernetes deployment (deploy/): `helm lint` and `helm template` of the chart
# with its default values and with values-external-etcd.yaml; every rendered object and
# the plain manifests through `kubernetes-validate --strict` for Kubernetes 1.30; the
# plain manifests equal to a fresh render; and every `shorthorn` command line in them
# accepted by the binary's own argument parser. `--write` regenerates the plain
# manifests from the chart instead of comparing them.
set -euo pipefail
cd "$(dirname "$0")/.."
chart=deploy/helm/shorthorn
plain=deploy/kubernetes/shorthorn.yaml
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

render_plain() {
    {
        echo "# Shorthorn's plain manifests: \`helm template shorthorn deploy/helm/shorthorn --set apiToken.create=false\`"
        echo "# (regenerate with scripts/check-deploy.sh --write). Create the API token first:"
        echo "#   kubectl create namespace shorthorn-system"
        echo "#   kubectl -n shorthorn-system create secret generic shorthorn-api-token --from-literal=token=\$(openssl rand -hex 16)"
        echo "# then: kubectl apply -f deploy/kubernetes/shorthorn.yaml (see docs/kubernetes.md)."
        helm template shorthorn "$chart" --set apiToken.create=false --set createNamespace=false
    } > "$1"
}

if [ "${1:-}" = "--write" ]; then
    render_plain "$plain"
    echo "wrote $plain"
    exit 0
fi

helm lint --quiet "$chart"
helm lint --quiet "$chart" -f "$chart/values-external-etcd.yaml"
helm template shorthorn "$chart" > "$out/default.yaml"
helm template shorthorn "$chart" -f "$chart/values-external-etcd.yaml" > "$out/external-etcd.yaml"
render_plain "$out/plain.yaml"
if ! diff -u "$plain" "$out/plain.yaml"; then
    echo "$plain differs from the chart: run scripts/check-deploy.sh --write" >&2
    exit 1
fi
for file in "$plain" "$out/default.yaml" "$out/external-etcd.yaml"; do
    kubernetes-validate --strict --kubernetes-version 1.30.0 --quiet "$file"
done
cargo build --quiet -p shorthorn
python3 scripts/check-manifests.py target/debug/shorthorn "$plain" "$out/default.yaml" "$out/external-etcd.yaml"
echo "deploy: chart, plain manifests and command lines check out"
