#!/usr/bin/env bash
# The matrix's benchmark (issue 23; not a test: it prints figures and asserts nothing). In the local cloud of this
# machine, one pure-Python set requested for 3 runtimes x 2 architectures, alternating:
#   universal:   the default: the probe finds the same files everywhere, one build, one version for all six pairs;
#   per-pair:    --no-universal: six builds, six versions.
# Both without bytecode (the build user here has no python3.12/3.13 to compile theirs with). For each: request -> every ARN (`layerforge --local build … --wait`, wall time), versions published, and the bytes
# stored in S3 (the artifacts: Lambda keeps a copy of each version too). Then what a function pays on import: the
# universal zip carries its build runtime's bytecode only, so a function of another runtime compiles those modules
# on every cold start. scripts/bench_import.py imports the universal layer with this machine's python3.11 (its
# bytecode) and the same layer without its .pyc files (what python3.12 and python3.13 find in it), from a read-only
# folder, as on Lambda's /opt.
#
# usage: scripts/bench_matrix.sh   (BENCH_RUNS=N runs per mode, default 3; BENCH_IMPORT_RUNS, default 15)
# Needs: Debian's unzip and zip, setpriv (util-linux) when run as root.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
runs=${BENCH_RUNS:-3}
iruns=${BENCH_IMPORT_RUNS:-15}
set_="six==1.16.0|idna==3.10|certifi==2024.8.30|urllib3==2.2.3|attrs==24.2.0|packaging==24.1|pyparsing==3.1.4|click==8.1.7|jmespath==1.0.1|python-dateutil==2.9.0.post0"
stmt="import six, idna, certifi, urllib3, attrs, packaging.version, pyparsing, click, jmespath, dateutil.parser"
py=/usr/bin/python3.11

LAYERFORGE_SKIP_SAM=1 bash scripts/bootstrap.sh
export PATH="$root/.tools/venv/bin:$PATH"
cargo build --all-targets --quiet
lf="$root/target/debug/layerforge"
work=$(mktemp -d)
local_dir="$work/local"
export LAYERFORGE_LOCAL_DIR="$local_dir"
"$lf" local up >/dev/null
trap '"$lf" local down >/dev/null || true; chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

now() { date +%s.%N; }
median() { tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "set (pure Python): $set_"
echo "pairs: python3.11 python3.12 python3.13 x arm64 x86_64; $runs runs per mode, alternating; wall time of build --wait"
declare -A times
stamp=$(date +%s)
universal_json=
for i in $(seq 1 "$runs"); do
  for mode in universal per-pair; do
    name="bench-$mode-$stamp-$i"
    # Without bytecode: this machine's build user has no python3.12/3.13 to compile theirs with (per pair).
    flags=(--no-bytecode)
    if [ "$mode" = per-pair ]; then flags+=(--no-universal); fi
    t0=$(now)
    out=$("$lf" --local build "$name" -r "$set_" --runtime python3.11 --runtime python3.12 --runtime python3.13 \
      --architecture arm64 --architecture x86_64 "${flags[@]}" --wait --json --poll-interval 0.2 2>/dev/null)
    t1=$(now)
    took=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    times[$mode]="${times[$mode]:-} $took"
    python3 - "$mode" "$i" "$took" "$out" <<'EOF'
import json, os, sys
import boto3
mode, i, took, out = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
state = json.load(open(os.path.join(os.environ["LAYERFORGE_LOCAL_DIR"], "state.json")))
arns = sorted({p["layer_version_arn"] for p in out["pairs"]})
artifacts = sorted({p["artifact"] for p in out["pairs"]})
s3 = boto3.client("s3", endpoint_url=state["moto_endpoint"], region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
stored = 0
for a in artifacts:
    bucket, key = a[len("s3://"):].split("/", 1)
    stored += s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
print(f"  {mode:<9} run {i}: {float(took):6.2f} s  state={out['state']} versions={len(arns)} artifacts={len(artifacts)} "
      f"stored={stored} B  builders={sorted({p.get('builder', '?') for p in out['pairs']})}")
EOF
  done
done
u=$(median <<<"${times[universal]# }")
p=$(median <<<"${times[per-pair]# }")
echo
echo "median request -> every ARN: universal ${u} s, per pair ${p} s; per-pair/universal = $(awk -v a="$p" -v b="$u" 'BEGIN { printf "%.2f", a / b }')x"
echo "the probe (submit-build's log):"
grep -h 'probe answered' "$local_dir/submit-build.log" | tail -n 1 | sed 's/^/  /'

# What a function imports: the universal layer with its bytecode (python3.11, the build runtime) and without it
# (what the other runtimes find: no cpython-312/313 .pyc), unpacked read-only.
universal_json=$("$lf" --local build "bench-bytecode-$stamp" -r "$set_" --runtime python3.11 --runtime python3.12 \
  --runtime python3.13 --architecture arm64 --architecture x86_64 --wait --json --poll-interval 0.2 2>/dev/null)
python3 - "$universal_json" "$work/universal.zip" <<'EOF'
import json, os, sys
import boto3
artifact = json.loads(sys.argv[1])["pairs"][0]["artifact"]
state = json.load(open(os.path.join(os.environ["LAYERFORGE_LOCAL_DIR"], "state.json")))
s3 = boto3.client("s3", endpoint_url=state["moto_endpoint"], region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
bucket, key = artifact[len("s3://"):].split("/", 1)
s3.download_file(bucket, key, sys.argv[2])
EOF
cp "$work/universal.zip" "$work/no-pyc.zip"
zip -q -d "$work/no-pyc.zip" '*.pyc' >/dev/null
for name in universal no-pyc; do
  mkdir -p "$work/$name" && unzip -q "$work/$name.zip" -d "$work/$name" && chmod -R a-w "$work/$name"
done
echo
echo "== cold import of the universal layer (python3.11 here; site python/)"
"$py" scripts/bench_import.py --python "$py" --site python --statement "$stmt" --runs "$iruns" \
  --baseline universal --layer universal "$work/universal" "$work/universal.zip" \
  --layer no-pyc "$work/no-pyc" "$work/no-pyc.zip"
