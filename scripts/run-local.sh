#!/usr/bin/env bash
# The whole layerforge pipeline on this machine, driven by the `layerforge` CLI against its local cloud
# (moto's server with the stack, the functions behind cargo-lambda's Runtime API, a Fargate stand-in, the
# S3-event forwarder):
#   layerforge local up
#   layerforge --local build NAME -r … --wait          -> the layer version ARN
#   layerforge --local fetch ARN --sam-cache            -> sam local's layer cache
#   an import check of the installed distributions' modules, then layerforge local down.
# Usage: scripts/run-local.sh [REQUIREMENTS_FILE]   (env: LAYER_NAME, LAYER_RUNTIME, LAYER_ARCHITECTURE)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
name=${LAYER_NAME:-local-demo}
runtime=${LAYER_RUNTIME:-python3.11}
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

step 0/5 "tools (scripts/bootstrap.sh) and binaries (cargo build)"
LAYERFORGE_SKIP_SAM=1 bash scripts/bootstrap.sh
export PATH="$root/.tools/venv/bin:$PATH"
cargo build --bins --quiet || fail "cargo build failed"
lf="$root/target/debug/layerforge"
took

step 1/5 "layerforge local up"
echo "  \$ layerforge local up"
"$lf" local up || fail "layerforge local up failed (logs in .local/)"
trap '"$lf" local down || true' EXIT
took

step 2/5 "layerforge --local build $name … --wait"
echo "  \$ layerforge --local build $name ${requirements[*]@Q} --runtime $runtime --architecture $arch --wait"
arn=$("$lf" --local build "$name" "${requirements[@]}" --runtime "$runtime" --architecture "$arch" \
  --description "Pure-Python demo layer for the local pipeline" --license MIT --wait) \
  || fail "the build did not publish (see .local/serve.log and .local/jobs/)"
echo "  layer version ARN: $arn"
took

step 3/5 "layerforge --local fetch ARN --sam-cache"
echo "  \$ layerforge --local fetch $arn --sam-cache"
fetched=$("$lf" --local fetch "$arn" --sam-cache) || fail "fetch failed"
layer_dir=$(sed -n 1p <<<"$fetched")
echo "  sam local layer cache: $layer_dir"
echo "  sam local image:       $(sed -n 2p <<<"$fetched")"
took

step 4/5 "import check: the modules of the installed distributions"
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
"$interp" -I - "$site" "$arch" "$only_list" <<'PY' || fail "importing the layer's modules failed"
import glob, importlib, os, platform, sys

site, arch, only_list = sys.argv[1], sys.argv[2], sys.argv[3] == "1"
host = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower())

def modules(dist):
    """Top-level modules of one installed distribution: top_level.txt, else the paths of its RECORD."""
    top = os.path.join(dist, "top_level.txt")
    if os.path.exists(top):
        return {line.strip() for line in open(top) if line.strip()}
    names = set()
    record = os.path.join(dist, "RECORD")
    for line in open(record) if os.path.exists(record) else []:
        path = line.split(",")[0]
        first = path.split("/")[0]
        if first.endswith((".dist-info", ".data")) or first in ("..", "__pycache__", "bin"):
            continue
        if "/" in path:
            names.add(first)
        elif first.endswith(".py"):
            names.add(first[:-3])
        elif ".cpython-" in first or first.endswith(".abi3.so"):
            names.add(first.split(".")[0])
    return names

sys.path.insert(0, site)
found = 0
for dist in sorted(glob.glob(os.path.join(site, "*.dist-info"))):
    for name in sorted(modules(dist)):
        if name.startswith("_") and not os.path.exists(os.path.join(site, name)):
            continue
        found += 1
        here = os.path.join(site, name)
        compiled = glob.glob(os.path.join(here, "**", "*.so"), recursive=True) + glob.glob(here + ".*.so")
        label = os.path.basename(dist)[: -len(".dist-info")]
        if only_list:
            print(f"  {name:<14} ({label})")
        elif compiled and arch != host:
            print(f"  {name:<14} ({label}) has compiled modules for {arch}; this host is {host}: not imported")
        else:
            m = importlib.import_module(name)
            where = os.path.relpath(getattr(m, "__file__", None) or here, site)
            print(f"  import {name:<14} ok  ({label}, {where})")
if not found:
    sys.exit("no installed distribution in the layer")
PY
took

step 5/5 "layerforge local down"
trap - EXIT
echo "  \$ layerforge local down"
"$lf" local down || fail "layerforge local down failed"
took
printf '\nlayerforge local pipeline: OK in %s s\n' "$(elapsed "$started")"
