#!/usr/bin/env bash
# Smoke-test (deploy/smoke-test.sh) a pod of IMAGE, the image just deployed
# as APP in NAMESPACE, through a port-forward: through the Service, an old
# pod still draining could answer instead. The workflows run it after each
# deploy; by hand, with kubectl pointed at the cluster:
#   bash deploy/kubernetes/smoke-test.sh NAMESPACE APP IMAGE DEVICE
set -euo pipefail
usage="usage: deploy/kubernetes/smoke-test.sh NAMESPACE APP IMAGE DEVICE"
namespace=${1:?$usage}
app=${2:?$usage}
image=${3:?$usage}
device=${4:?$usage}

# A pod of this image that is not shutting down.
pod=$(kubectl -n "$namespace" get pods -l "app.kubernetes.io/name=$app" \
  -o json | jq -r --arg image "$image" 'first(.items[]
    | select(.metadata.deletionTimestamp == null
      and .spec.containers[0].image == $image)
    | .metadata.name) // empty')
if [ -z "$pod" ]; then
  echo "::error::No running pod of $image"
  exit 1
fi
kubectl -n "$namespace" port-forward "pod/$pod" 8080:8000 >/dev/null &
trap 'kill $!' EXIT
bash "$(dirname "$0")/../smoke-test.sh" http://localhost:8080 "$device"
