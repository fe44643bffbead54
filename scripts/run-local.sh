#!/usr/bin/env bash
# The whole layerforge pipeline on this machine, against moto's server (the local AWS) and cargo-lambda's
# Lambda Runtime API emulator, through the same code paths as in AWS:
#   1. submit-build, invoked through the Runtime API with events/local-demo.json (or $1), submits a Batch job;
#   2. the job is read back (DescribeJobs) and layer-builder runs here with exactly its command (moto runs no
#      containers: this stands in for Fargate);
#   3. the S3 event moto generated for the upload is taken from the queue and publish-layer is invoked with it;
#   4. the layer version is shown, unzipped and imported with a Python of the layer's version, and unpacked into
#      sam local's layer cache.
# Running it again shows the cached path: the artifacts are kept in .local/artifacts between runs.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
event=${1:-events/local-demo.json}
state_dir="$root/.local"
sam_cache_root=${LAYERFORGE_SAM_CACHE:-"$HOME/.aws-sam/layers-pkg"}
mkdir -p "$state_dir"
py="$root/.tools/venv/bin/python"

started=$EPOCHREALTIME
step_start=$started
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
step() { step_start=$EPOCHREALTIME; printf '\n\033[1m[%s] %s\033[0m\n' "$1" "$2"; }
took() { echo "  done in $(elapsed "$step_start") s"; }
fail() { echo "run-local: FAILED: $*" >&2; exit 1; }

watch_pid=
cleanup() {
  if [ -n "$watch_pid" ] && kill -0 "$watch_pid" 2>/dev/null; then
    kill -- "-$watch_pid" 2>/dev/null || kill "$watch_pid" 2>/dev/null || true
    wait "$watch_pid" 2>/dev/null || true
  fi
  stop_moto
}
trap cleanup EXIT

step 0/5 "tools (scripts/bootstrap.sh) and binaries (cargo build)"
LAYERFORGE_SKIP_SAM=1 bash scripts/bootstrap.sh
export PATH="$root/.tools/venv/bin:$PATH"
cargo build --bins --quiet || fail "cargo build failed"
took

step 1/5 "local AWS: moto server + what template.yaml creates"
# shellcheck source=scripts/moto.sh
. scripts/moto.sh
start_moto "$root" "$state_dir/moto.log" || fail "moto did not start (see $state_dir/moto.log)"
"$py" scripts/local_stack.py --endpoint "$MOTO_ENDPOINT" provision --state "$state_dir/state.json" \
  --env-file "$state_dir/functions.env" >/dev/null || fail "provisioning moto failed"
"$py" scripts/local_stack.py --endpoint "$MOTO_ENDPOINT" seed --state "$state_dir/state.json" --dir "$state_dir/artifacts"
echo "  bucket layerforge-artifacts -> SQS layerforge-artifact-events; Fargate queues + job definitions for arm64, x86_64"
took

step 2/5 "submit-build through the Lambda Runtime API (cargo lambda watch + invoke)"
port=$("$py" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
setsid cargo lambda watch --invoke-address 127.0.0.1 --invoke-port "$port" --env-file "$state_dir/functions.env" \
  --ignore-changes --quiet >"$state_dir/watch.log" 2>&1 &
watch_pid=$!
for _ in $(seq 1 150); do
  "$py" -c "import socket; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null && break
  kill -0 "$watch_pid" 2>/dev/null || { tail -20 "$state_dir/watch.log" >&2; fail "cargo lambda watch exited"; }
  sleep 0.2
done
invoke() { # function, event file -> response on stdout
  cargo lambda invoke "$1" --invoke-address 127.0.0.1 --invoke-port "$port" --data-file "$2" 2>"$state_dir/invoke.err" \
    || { cat "$state_dir/invoke.err" >&2; tail -20 "$state_dir/watch.log" >&2; return 1; }
}
echo "  request: $(tr -d '\n' <"$event" | tr -s ' ')"
response=$(invoke submit-build "$event") || fail "submit-build failed"
echo "  response: $response"
field() { "$py" -c "import json,sys; print(json.loads(sys.argv[1]).get(sys.argv[2]) or '')" "$1" "$2"; }
status=$(field "$response" status)
artifact=$(field "$response" artifact)
key=${artifact#s3://layerforge-artifacts/}
took

if [ "$status" = submitted ]; then
  step 3/5 "the Batch job's command, run here with layer-builder (stands in for Fargate)"
  job=$("$py" scripts/local_stack.py --endpoint "$MOTO_ENDPOINT" job-command --job-id "$(field "$response" job_id)")
  # Read the argv NUL-separated: requirement text holds newlines.
  argv=()
  while IFS= read -r -d '' a; do argv+=("$a"); done < <("$py" -c "
import json,sys; sys.stdout.write(''.join(a + '\0' for a in json.loads(sys.argv[1])['command']))" "$job")
  echo "  DescribeJobs: queue $(field "$job" jobQueue), definition $(field "$job" jobDefinition)"
  echo "  layer-builder ${argv[*]@Q}"
  (set -a; . "$state_dir/functions.env"; set +a; "$root/target/debug/layer-builder" "${argv[@]}") \
    || fail "layer-builder failed (exit $?)"
  took

  step 4/5 "publish-layer with the S3 event moto generated (through the Runtime API)"
  "$py" scripts/local_stack.py --endpoint "$MOTO_ENDPOINT" next-event --state "$state_dir/state.json" --key "$key" \
    --out "$state_dir/s3-event.json" >/dev/null || fail "no S3 event for $key"
  published=$(invoke publish-layer "$state_dir/s3-event.json") || fail "publish-layer failed"
  echo "  response: $published"
  arn=$("$py" -c "
import json,sys
r = json.loads(sys.argv[1]); items = r.get('records') or r.get('results') or []
arns = [i.get('layer_version_arn') for i in items if i.get('layer_version_arn')]
print(arns[0] if arns else '')" "$published")
  [ -n "$arn" ] || fail "publish-layer published nothing: $published"
  info=$("$py" scripts/local_stack.py --endpoint "$MOTO_ENDPOINT" layer-info --arn "$arn")
  "$py" scripts/local_stack.py --endpoint "$MOTO_ENDPOINT" save --state "$state_dir/state.json" --dir "$state_dir/artifacts" >/dev/null
  took
else
  step 3/5 "cached: an identical pinned build exists, no job submitted"
  arn=$(field "$response" layer_version_arn)
  [ -n "$arn" ] || fail "cached response without layer_version_arn: $response"
  info="{}"
  took
  step 4/5 "(publish skipped: the layer version exists)"
fi

step 5/5 "the layer: version, content, import test, sam local cache"
zip="$state_dir/layer.zip"
"$py" - "$MOTO_ENDPOINT" "$key" "$zip" <<'PY'
import sys, boto3
from botocore.config import Config
s3 = boto3.client("s3", endpoint_url=sys.argv[1], region_name="us-east-1", aws_access_key_id="testing",
                  aws_secret_access_key="testing", config=Config(s3={"addressing_style": "path"}))
s3.download_file("layerforge-artifacts", sys.argv[2], sys.argv[3])
PY
runtime=$("$py" -c "import json; print(json.load(open('$event')).get('runtime', 'python3.12'))")
arch=$("$py" -c "import json; print(json.load(open('$event')).get('architecture', 'arm64'))")
sha=$("$py" -c "import base64,hashlib; print(base64.b64encode(hashlib.sha256(open('$zip','rb').read()).digest()).decode())")
echo "  layer version ARN: $arn"
echo "  CodeSha256:        ${sha}$( [ "$info" != "{}" ] && echo " (Lambda: $(field "$info" code_sha256))")"
echo "  size:              $(stat -c %s "$zip") bytes zipped"
names=$("$root/target/debug/layerforge-local" sam-names --arn "$arn" --runtime "$runtime" --architecture "$arch")
layer_dir="$sam_cache_root/$(field "$names" layer_dir)"
rm -rf "$layer_dir"; mkdir -p "$layer_dir"
"$py" -c "import zipfile,sys; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])" "$zip" "$layer_dir"
site="$layer_dir/python/lib/$runtime/site-packages"
interp=$(command -v "$runtime" || true)
[ -n "$interp" ] || fail "$runtime is not on PATH: can't import-test the layer (build for the host's Python instead)"
modules=$("$py" -c "
import json,re
r = json.load(open('$event')).get('requirements', '')
lines = r if isinstance(r, list) else re.split(r'[|\n]', r)
names = [re.split(r'[\s\[<>=!~;@]', l.strip(), maxsplit=1)[0] for l in lines if l.strip() and not l.strip().startswith('#')]
print(' '.join(n.lower().replace('-', '_') for n in names))")
PYTHONPATH="$site" PYTHONNOUSERSITE=1 "$interp" -I -c "
import sys; sys.path.insert(0, '$site')
import importlib
for name in '$modules'.split():
    m = importlib.import_module(name)
    print(f'  import {name:<10} ok  {getattr(m, \"__version__\", \"\")}  from {m.__file__.replace(\"$layer_dir/\", \"\")}')
" || fail "importing the layer's packages failed"
echo "  sam local layer cache: $layer_dir"
echo "  sam local image:       $(field "$names" image)"
printf '\nlayerforge local pipeline: OK (%s) in %s s\n' "$status" "$(elapsed "$started")"
