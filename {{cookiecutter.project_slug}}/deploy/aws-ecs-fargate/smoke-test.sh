#!/usr/bin/env bash
# Smoke-test (deploy/smoke-test.sh) the service of the CloudFormation stack
# STACK at the address the stack outputs (Url). The workflows run it after
# each deploy; by hand, with the AWS CLI's credentials and region set:
#   bash deploy/aws-ecs-fargate/smoke-test.sh STACK DEVICE
set -euo pipefail
usage="usage: deploy/aws-ecs-fargate/smoke-test.sh STACK DEVICE"
stack=${1:?$usage}
device=${2:?$usage}

url=$(aws cloudformation describe-stacks --stack-name "$stack" \
  --query "Stacks[0].Outputs[?OutputKey=='Url'].OutputValue" --output text)
bash "$(dirname "$0")/../smoke-test.sh" "$url" "$device"
