#!/usr/bin/env bash
# Deploy IMAGE as APP to NAMESPACE: this folder's manifests through
# kustomize (edited on a copy: the folder stays as it is), then wait for
# the rollout. The workflows run it for staging and production; by hand,
# with kubectl pointed at the cluster:
#   bash deploy/kubernetes/deploy.sh NAMESPACE APP IMAGE
set -euo pipefail
usage="usage: deploy/kubernetes/deploy.sh NAMESPACE APP IMAGE"
namespace=${1:?$usage}
app=${2:?$usage}
image=${3:?$usage}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$(dirname "$0")"/*.yaml "$work"
cd "$work"
kustomize edit set image "$app=$image"
kustomize edit set namespace "$namespace"
# A Deployment that exists keeps the replicas its autoscaler chose:
# applying deployment.yaml's count would cut a scaled-out one back to it.
replicas=$(kubectl -n "$namespace" get "deployment/$app" --ignore-not-found \
  -o jsonpath='{.spec.replicas}')
if [ -n "$replicas" ]; then
  kustomize edit set replicas "$app=$replicas"
fi
kubectl apply -k .
kubectl -n "$namespace" rollout status "deployment/$app" --timeout=10m
