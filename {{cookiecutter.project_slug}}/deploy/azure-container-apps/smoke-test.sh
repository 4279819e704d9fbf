#!/usr/bin/env bash
# Smoke-test (deploy/smoke-test.sh) the latest revision of the container
# app APP, at the revision's own address once it is ready: while a new
# revision fails its probes, the app's address still reaches the old one.
# The workflows run it after each deploy; by hand, logged in with az:
#   bash deploy/azure-container-apps/smoke-test.sh RESOURCE_GROUP APP DEVICE
set -euo pipefail
usage="usage: deploy/azure-container-apps/smoke-test.sh RESOURCE_GROUP APP DEVICE"
group=${1:?$usage}
app=${2:?$usage}
device=${3:?$usage}

attempts=30  # 10 s apart: 5 minutes
for attempt in $(seq "$attempts"); do
  state=$(az containerapp show --name "$app" --resource-group "$group" \
    --output json)
  if jq -e '.properties | .latestReadyRevisionName == .latestRevisionName' \
      <<<"$state" >/dev/null; then
    break
  fi
  if [ "$attempt" = "$attempts" ]; then
    revision=$(jq -r .properties.latestRevisionName <<<"$state")
    echo "::error::Revision $revision was not ready in 5 minutes."
    exit 1
  fi
  sleep 10
done
fqdn=$(jq -r .properties.latestRevisionFqdn <<<"$state")
bash "$(dirname "$0")/../smoke-test.sh" "https://$fqdn" "$device"
