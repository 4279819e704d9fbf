#!/usr/bin/env bash
# The image digest production may promote, on stdout: never a rebuild, and
# never a tag that can move. Either the digest given (once it is one), or
# the one that the last staging run of this commit recorded after its smoke
# test passed (the run's `tested-digest` artifact; kept 90 days).
#
# production.yml runs it; by hand (gh logged in, run in the repository):
#   bash deploy/tested-digest.sh               # for HEAD (or GITHUB_SHA)
#   bash deploy/tested-digest.sh sha256:...    # checks a digest given
set -euo pipefail
digest=${1:-}
commit=${GITHUB_SHA:-$(git rev-parse HEAD)}

if [ -z "$digest" ]; then
  run=$(gh run list --workflow staging.yml --commit "$commit" \
    --status success --limit 1 --json databaseId \
    --jq '.[0].databaseId // empty')
  record=$(mktemp -d)
  trap 'rm -rf "$record"' EXIT
  # Messages go to stderr: stdout is the digest (the runner reads ::error::
  # from both).
  if [ -z "$run" ] ||
    ! gh run download "$run" --name tested-digest --dir "$record" >&2; then
    echo "::error::No staging run of $commit passed (its record is kept 90 days): release a commit whose staging run passed, such as main after its last green staging run, or give a digest a staging run printed" >&2
    exit 1
  fi
  digest=$(cat "$record/digest")
fi
if ! [[ "$digest" =~ ^sha256:[0-9a-f]{64}$ ]]; then
  echo "::error::'$digest' is not a sha256 digest" >&2
  exit 1
fi
echo "$digest"
