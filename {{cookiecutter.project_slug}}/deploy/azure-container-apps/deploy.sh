#!/usr/bin/env bash
# Deploy IMAGE as the container app APP of RESOURCE_GROUP, in the Container
# Apps environment ENVIRONMENT, pulling from REGISTRY with the managed
# identity IDENTITY_ID: this folder's containerapp.yaml, filled in on a
# copy. The app is created the first time; afterwards each deploy makes a
# new revision. The workflows run it for staging and production; by hand,
# logged in with az:
#   bash deploy/azure-container-apps/deploy.sh RESOURCE_GROUP ENVIRONMENT \
#     APP IMAGE REGISTRY IDENTITY_ID
set -euo pipefail
usage="usage: deploy/azure-container-apps/deploy.sh RESOURCE_GROUP ENVIRONMENT APP IMAGE REGISTRY IDENTITY_ID"
group=${1:?$usage}
environment=${2:?$usage}
export APP=${3:?$usage} IMAGE=${4:?$usage} REGISTRY=${5:?$usage}
export IDENTITY_ID=${6:?$usage}

of_environment() {
  az containerapp env show --name "$environment" --resource-group "$group" \
    --query "$1" --output tsv
}
ENVIRONMENT_ID=$(of_environment id)
LOCATION=$(of_environment location)
export ENVIRONMENT_ID LOCATION
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp "$(dirname "$0")/containerapp.yaml" "$work"
yq -i '.name = strenv(APP)
  | .location = strenv(LOCATION)
  | .identity.userAssignedIdentities = {strenv(IDENTITY_ID): {}}
  | .properties.managedEnvironmentId = strenv(ENVIRONMENT_ID)
  | .properties.configuration.registries[0].server = strenv(REGISTRY)
  | .properties.configuration.registries[0].identity = strenv(IDENTITY_ID)
  | .properties.template.containers[0].image = strenv(IMAGE)' \
  "$work/containerapp.yaml"
verb=create
if az containerapp show --name "$APP" --resource-group "$group" \
    --output none 2>/dev/null; then
  verb=update
fi
az containerapp "$verb" --name "$APP" --resource-group "$group" \
  --yaml "$work/containerapp.yaml" --output none
