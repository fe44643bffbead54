#!/usr/bin/env bash
# The test command: installs the tools (scripts/bootstrap.sh), starts moto's server on loopback, runs every
# Rust test (unit, aws-smithy-mocks, and the integration tests against moto and the real package index), then
# the template and Dockerfile checks. Exits non-zero on any failure.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

bash scripts/bootstrap.sh
export PATH="$root/.tools/venv/bin:$PATH"
# shellcheck source=scripts/moto.sh
. scripts/moto.sh
trap stop_moto EXIT
start_moto "$root"

echo "== cargo test"
cargo test 2>&1 | tee "$root/.tools/cargo-test.log"
echo "== template and Dockerfile checks (cfn-lint, sam validate --lint, checkov, hadolint, sam build arm64)"
# --no-test: cargo test above already ran the template tests.
bash scripts/check-template.sh --no-test
echo "all tests passed"
