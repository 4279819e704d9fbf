#!/usr/bin/env bash
# Deploy IMAGE with the CloudFormation stack STACK (this folder's
# cloudformation.yml) in the VPC VPC_ID on the subnets SUBNET_IDS (comma
# separated), then wait until the service is stable. CloudFormation rolls
# back a deploy whose tasks fail their health checks. The workflows run it
# for staging and production; by hand, with the AWS CLI's credentials and
# region set:
#   bash deploy/aws-ecs-fargate/deploy.sh STACK IMAGE VPC_ID SUBNET_IDS
set -euo pipefail
usage="usage: deploy/aws-ecs-fargate/deploy.sh STACK IMAGE VPC_ID SUBNET_IDS"
stack=${1:?$usage}
image=${2:?$usage}
vpc=${3:?$usage}
subnets=${4:?$usage}

aws cloudformation deploy \
  --template-file "$(dirname "$0")/cloudformation.yml" \
  --stack-name "$stack" \
  --capabilities CAPABILITY_IAM \
  --no-fail-on-empty-changeset \
  --parameter-overrides "Image=$image" "VpcId=$vpc" "SubnetIds=$subnets"
physical_id() {
  aws cloudformation describe-stack-resource --stack-name "$stack" \
    --logical-resource-id "$1" \
    --query StackResourceDetail.PhysicalResourceId --output text
}
cluster=$(physical_id Cluster)
service=$(physical_id Service)
aws ecs wait services-stable --cluster "$cluster" --services "$service"
