#!/usr/bin/env bash
# Validates every Kubernetes manifest in workers/k8s against the schemas of one
# Kubernetes version, offline (kubernetes-validate ships them in its wheel).
# A resource without a schema (a misspelt kind or apiVersion) fails too, and so does
# a kustomization that lists a missing file.
#
#   scripts/lint-k8s.sh VENV KUBERNETES_VERSION
set -euo pipefail
venv=$1
version=$2
dir=workers/k8s

manifests=()
for file in "$dir"/*.yaml; do
  [ "$(basename "$file")" = kustomization.yaml ] || manifests+=("$file")
done
[ ${#manifests[@]} -gt 0 ] || { echo "lint-k8s: no manifests in $dir" >&2; exit 1; }

status=0
output=$("$venv/bin/kubernetes-validate" --strict --kubernetes-version "$version" "${manifests[@]}" 2>&1) || status=$?
echo "$output"
if [ "$status" -ne 0 ] || grep -q '^WARN' <<<"$output"; then
  echo "lint-k8s: the manifests in $dir do not validate against Kubernetes $version" >&2
  exit 1
fi

"$venv/bin/python" - "$dir/kustomization.yaml" <<'PY'
import os, sys, yaml
path = sys.argv[1]
with open(path) as f:
    kustomization = yaml.safe_load(f)
missing = [r for r in kustomization.get("resources", [])
           if not os.path.exists(os.path.join(os.path.dirname(path), r))]
if kustomization.get("kind") != "Kustomization" or missing:
    sys.exit(f"lint-k8s: {path} is not a Kustomization or lists missing files: {missing}")
print(f"INFO {path} lists {len(kustomization['resources'])} existing resources")
PY
