#!/usr/bin/env bash
# The whole layerforge pipeline on this machine, driven by the `layerforge` CLI against its local cloud
# (moto's server with the stack, the functions behind cargo-lambda's Runtime API, a Fargate stand-in, the
# S3-event forwarder):
#   layerforge local up
#   layerforge --local build NAME -r … --wait          -> the layer version ARN (built by the fast builder, no Batch job)
#   layerforge --local build NAME-matrix … --runtime A --runtime B --architecture arm64 --architecture x86_64 --wait
#                                                       -> one universal version for the four pairs (docs/matrix.md)
#   layerforge --local fetch ARN --sam-cache            -> sam local's layer cache
#   an import check of the installed distributions' modules, then layerforge local down.
# Usage: scripts/run-local.sh [REQUIREMENTS_FILE]   (env: LAYER_NAME, LAYER_RUNTIME, LAYER_ARCHITECTURE)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
name=${LAYER_NAME:-local-demo}
# The layer's bytecode is compiled by a Python of its runtime's version: by default the runtime is this host's
# python3 (when it is one of Lambda's), else python3.11.
host_runtime=$(python3 -c 'import sys; print("python%d.%d" % sys.version_info[:2])' 2>/dev/null || true)
case "$host_runtime" in
  python3.1[0-4]) ;;
  *) host_runtime=python3.11 ;;
esac
runtime=${LAYER_RUNTIME:-$host_runtime}
arch=${LAYER_ARCHITECTURE:-arm64}
if [ $# -ge 1 ]; then
  requirements=(--requirements-file "$1")
else
  requirements=(-r "six==1.16.0|attrs==24.2.0|idna==3.10")
fi

started=$EPOCHREALTIME
step_start=$started
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
step() { step_start=$EPOCHREALTIME; printf '\n\033[1m[%s] %s\033[0m\n' "$1" "$2"; }
took() { echo "  done in $(elapsed "$step_start") s"; }
fail() { echo "run-local: FAILED: $*" >&2; exit 1; }

step 0/6 "tools (scripts/bootstrap.sh) and binaries (cargo build)"
LAYERFORGE_SKIP_SAM=1 bash scripts/bootstrap.sh
export PATH="$root/.tools/venv/bin:$PATH"
cargo build --bins --quiet || fail "cargo build failed"
lf="$root/target/debug/layerforge"
took

step 1/6 "layerforge local up"
echo "  \$ layerforge local up"
"$lf" local up || fail "layerforge local up failed (logs in .local/)"
trap '"$lf" local down || true' EXIT
took

step 2/6 "layerforge --local build $name … --wait"
echo "  \$ layerforge --local build $name ${requirements[*]@Q} --runtime $runtime --architecture $arch --wait"
result=$("$lf" --local build "$name" "${requirements[@]}" --runtime "$runtime" --architecture "$arch" \
  --description "Pure-Python demo layer for the local pipeline" --license MIT --wait --json) \
  || fail "the build did not publish (see .local/serve.log, .local/fast-builder.log and .local/jobs/)"
field() { python3 -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1]) or "")' "$1" <<<"$result"; }
arn=$(field layer_version_arn)
echo "  layer version ARN: $arn"
# A wheel-only set takes the fast path: built by the fast-builder function, no Batch job (docs/fast-path.md).
echo "  built by: $(field builder) ($(field builder_reason)); Batch job: $(field job_id)"
[ "$(field builder)" = function ] && [ -z "$(field job_id)" ] \
  || fail "the wheel-only demo layer was not built by the fast builder without a Batch job"
took

step 3/6 "a matrix: the same set for two runtimes and both architectures"
other=python3.12
[ "$runtime" = python3.12 ] && other=python3.13
echo "  \$ layerforge --local build $name-matrix … --runtime $runtime --runtime $other --architecture arm64 --architecture x86_64 --wait"
matrix=$("$lf" --local build "$name-matrix" "${requirements[@]}" --runtime "$runtime" --runtime "$other" \
  --architecture arm64 --architecture x86_64 --wait --json) \
  || fail "the matrix did not publish every pair (see .local/submit-build.log and .local/fast-builder.log)"
# The default set is pure Python: one universal version; a requirements file may need a version per pair.
pure=$([ $# -ge 1 ] && echo 0 || echo 1)
python3 - "$matrix" "$pure" <<'PY' || fail "the matrix did not publish as expected (pure set: one universal version)"
import json, sys
m = json.loads(sys.argv[1])
pure = sys.argv[2] == "1"
arns = {p["layer_version_arn"] for p in m["pairs"]}
print(f"  matrix {m['matrix_id']}: {m['state']}, universal={m['universal']} ({m['universal_reason']})")
for p in m["pairs"]:
    print(f"    {p['runtime']}/{p['architecture']}: {p['layer_version_arn']}")
ok = m["state"] == "published" and len(m["pairs"]) == 4
sys.exit(0 if ok and (not pure or (m["universal"] and len(arns) == 1)) else 1)
PY
took

step 4/6 "layerforge --local fetch ARN --sam-cache"
echo "  \$ layerforge --local fetch $arn --sam-cache"
fetched=$("$lf" --local fetch "$arn" --sam-cache) || fail "fetch failed"
layer_dir=$(sed -n 1p <<<"$fetched")
echo "  sam local layer cache: $layer_dir"
echo "  sam local image:       $(sed -n 2p <<<"$fetched")"
took

step 5/6 "import check: the modules of the installed distributions"
site="$layer_dir/python/lib/$runtime/site-packages"
[ -d "$site" ] || fail "no $site in the layer"
interp=$(command -v "$runtime" || true)
if [ -z "$interp" ]; then
  echo "  $runtime is not on this host: the layer's modules are listed, not imported"
  interp=$(command -v python3)
  only_list=1
else
  only_list=0
fi
"$interp" -I scripts/import_check.py "$site" "$arch" "$only_list" || fail "importing the layer's modules failed"
took

step 6/6 "layerforge local down"
trap - EXIT
echo "  \$ layerforge local down"
"$lf" local down || fail "layerforge local down failed"
took
printf '\nlayerforge local pipeline: OK in %s s\n' "$(elapsed "$started")"
