#!/usr/bin/env python3
"""What kubernetes-validate cannot check in the rendered manifests: every `shorthorn`
container's command line is accepted by the binary's own parser (SHORTHORN_CHECK_ARGS=1,
with $(VAR) references filled in as the kubelet would), and the VolumeSnapshotClass (a
CRD kubernetes-validate has no schema for) has exactly the fields its schema allows.

Usage: check-manifests.py SHORTHORN_BINARY MANIFEST..."""

import os
import re
import subprocess
import sys

import yaml

# What the kubelet puts in for $(VAR) (downward API values in the manifests).
SAMPLE_ENV = {"NODE_NAME": "node-1", "POD_IP": "10.0.0.7"}
SNAPSHOT_CLASS_FIELDS = {"apiVersion", "kind", "metadata", "driver", "deletionPolicy", "parameters"}


def pod_specs(doc):
    spec = doc.get("spec", {})
    template = spec.get("template", {}).get("spec")
    if template:
        yield template


def check(binary, path):
    problems = []
    checked = 0
    with open(path) as f:
        docs = [d for d in yaml.safe_load_all(f) if d]
    for doc in docs:
        name = f"{path}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
        if doc.get("kind") == "VolumeSnapshotClass":
            extra = set(doc) - SNAPSHOT_CLASS_FIELDS
            if extra or doc.get("deletionPolicy") not in ("Delete", "Retain") or not doc.get("driver"):
                problems.append(f"{name}: fields {sorted(doc)}")
        for spec in pod_specs(doc):
            for container in spec.get("initContainers", []) + spec.get("containers", []):
                if container.get("command") != ["shorthorn"]:
                    continue
                args = [re.sub(r"\$\((\w+)\)", lambda m: SAMPLE_ENV.get(m.group(1), m.group(0)), a)
                        for a in container.get("args", [])]
                env = dict(os.environ, SHORTHORN_CHECK_ARGS="1")
                run = subprocess.run([binary] + args, env=env, capture_output=True, text=True)
                checked += 1
                if run.returncode != 0:
                    problems.append(f"{name} container {container['name']}: {args}: {run.stderr.strip()}")
    return checked, problems


def main():
    binary, paths = sys.argv[1], sys.argv[2:]
    all_problems = []
    for path in paths:
        checked, problems = check(binary, path)
        if checked == 0:
            all_problems.append(f"{path}: no shorthorn container found")
        all_problems += problems
    for problem in all_problems:
        print(problem, file=sys.stderr)
    sys.exit(1 if all_problems else 0)


if __name__ == "__main__":
    main()
