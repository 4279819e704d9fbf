#!/usr/bin/env bash
# Deploy IMAGE as the Cloud Run service SERVICE, run as the service account
# RUNTIME_SERVICE_ACCOUNT: this folder's service.yaml, filled in on a copy.
# The workflows run it for staging and production; by hand, with gcloud's
# project and region set (the workflows set CLOUDSDK_CORE_PROJECT and
# CLOUDSDK_RUN_REGION):
#   bash deploy/gcp-cloud-run/deploy.sh SERVICE IMAGE RUNTIME_SERVICE_ACCOUNT
set -euo pipefail
usage="usage: deploy/gcp-cloud-run/deploy.sh SERVICE IMAGE RUNTIME_SERVICE_ACCOUNT"
export SERVICE=${1:?$usage} IMAGE=${2:?$usage} RUNTIME=${3:?$usage}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$(dirname "$0")/service.yaml" "$work"
yq -i '.metadata.name = strenv(SERVICE)
  | .spec.template.spec.containers[0].image = strenv(IMAGE)
  | .spec.template.spec.serviceAccountName = strenv(RUNTIME)' \
  "$work/service.yaml"
gcloud run services replace "$work/service.yaml"
