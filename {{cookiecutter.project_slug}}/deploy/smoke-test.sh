#!/usr/bin/env bash
# Smoke-test a running release: /ready answers and reports the device the
# release was built for, and /predict answers the API's documented example
# as the release itself serves it in /openapi.json (api/schemas.py).
#
# The deploy workflows run it on every release, through the target's own
# deploy/<target>/smoke-test.sh (which finds the release's address); run
# it by hand against any address:
#   bash deploy/smoke-test.sh https://your-service.example.com cpu
# A service behind authentication: SMOKE_TEST_AUTHORIZATION, where set,
# goes with every request as its Authorization header ("Bearer <token>").
set -euo pipefail
usage="usage: deploy/smoke-test.sh URL DEVICE (cpu or cuda)"
url=${1:?$usage}
device=${2:?$usage}
url=${url%/}

auth=()
if [ -n "${SMOKE_TEST_AUTHORIZATION:-}" ]; then
  auth=(--header "Authorization: $SMOKE_TEST_AUTHORIZATION")
fi
# (${auth[@]+...}: an empty array is "unbound" to bash 3, macOS's bash.)
fetch() { curl --fail --silent --show-error ${auth[@]+"${auth[@]}"} "$@"; }

# A new release may need a minute before it answers: retry /ready only.
ready=$(fetch --retry 10 --retry-delay 6 --retry-all-errors "$url/ready")
echo "$ready"
# A GPU release that fell back to the CPU is ready all the same.
if ! jq -e --arg device "$device" '.device == $device' <<<"$ready" >/dev/null
then
  echo "::error::$url/ready does not report device $device"
  exit 1
fi
example=$(fetch "$url/openapi.json" \
  | jq -c '.components.schemas.Item.examples[0] // empty')
if [ -z "$example" ]; then
  echo "::error::$url/openapi.json documents no example Item"
  exit 1
fi
fetch "$url/predict" -H 'content-type: application/json' -d "$example"
echo
