#!/usr/bin/env bash
# Smoke-test (deploy/smoke-test.sh) the Cloud Run service SERVICE at its
# address. The workflows run it after each deploy; by hand, with gcloud's
# project and region set (the workflows set CLOUDSDK_CORE_PROJECT and
# CLOUDSDK_RUN_REGION):
#   bash deploy/gcp-cloud-run/smoke-test.sh SERVICE DEVICE
set -euo pipefail
usage="usage: deploy/gcp-cloud-run/smoke-test.sh SERVICE DEVICE"
service=${1:?$usage}
device=${2:?$usage}

url=$(gcloud run services describe "$service" --format 'value(status.url)')
bash "$(dirname "$0")/../smoke-test.sh" "$url" "$device"
