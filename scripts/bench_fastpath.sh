#!/usr/bin/env bash
# The fast path's benchmark (issue 22; not a test: it prints figures and asserts nothing). In the local cloud of this
# machine, request -> published layer version ARN (`layerforge --local build … --wait`, wall time) for one wheel-only
# set, through the fast builder (`--builder function`) and through the Batch path (`--builder batch`: the Fargate
# stand-in, which starts a job within a second of its submission), alternating, each run a new layer name (the same
# fingerprint, so the same bytes: the CodeSha256 of every version is printed too). Then the ratio of the medians.
# What a real account adds to each path (Lambda's asynchronous queue and cold start, Batch's scheduling and
# Fargate's image pull) is written out in docs/benchmarks.md, with sources.
#
# usage: scripts/bench_fastpath.sh   (BENCH_RUNS=N runs per path, default 3; BENCH_SET, the requirements, default
#                                     requests+httpx pinned; BENCH_RUNTIME, default this host's python3.X)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
runs=${BENCH_RUNS:-3}
set_=${BENCH_SET:-"requests==2.32.3|httpx==0.27.2|certifi==2024.8.30|idna==3.10|urllib3==2.2.3|charset-normalizer==3.4.0|anyio==4.6.2|sniffio==1.3.1|h11==0.14.0|httpcore==1.0.6"}
runtime=${BENCH_RUNTIME:-$(python3 -c 'import sys; print("python%d.%d" % sys.version_info[:2])')}
arch=$(uname -m | sed 's/aarch64/arm64/')

LAYERFORGE_SKIP_SAM=1 bash scripts/bootstrap.sh
export PATH="$root/.tools/venv/bin:$PATH"
cargo build --all-targets --quiet   # the test build's binaries (scripts/test.sh builds them too)
lf="$root/target/debug/layerforge"
local_dir=$(mktemp -d)/local
export LAYERFORGE_LOCAL_DIR="$local_dir"
"$lf" local up >/dev/null
trap '"$lf" local down >/dev/null || true' EXIT

now() { date +%s.%N; }
median() { tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { python3 -c 'import json, sys; print(json.load(sys.stdin).get(sys.argv[1]) or "")' "$1"; }

echo "set: $set_"
echo "runtime $runtime, architecture $arch; $runs runs per path, alternating; wall time of build --wait"
declare -A times
stamp=$(date +%s)
for i in $(seq 1 "$runs"); do
  for path in function batch; do
    name="bench-$path-$stamp-$i"
    t0=$(now)
    out=$("$lf" --local build "$name" -r "$set_" --runtime "$runtime" --architecture "$arch" --builder "$path" \
      --wait --json --poll-interval 0.2 2>/dev/null)
    t1=$(now)
    took=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
    times[$path]="${times[$path]:-} $took"
    arn=$(field layer_version_arn <<<"$out")
    builder=$(field builder <<<"$out")
    job=$(field job_id <<<"$out")
    sha=$(python3 - "$arn" <<'EOF'
import json, os, sys, urllib.request
arn = sys.argv[1].split(":")
state = json.load(open(os.path.join(os.environ["LAYERFORGE_LOCAL_DIR"], "state.json")))
url = f"{state['moto_endpoint']}/2018-10-31/layers/{arn[6]}/versions/{arn[7]}"
req = urllib.request.Request(url, headers={"Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/lambda/aws4_request"})
print(json.load(urllib.request.urlopen(req))["Content"]["CodeSha256"])
EOF
)
    printf '  %-8s run %d: %6.2f s  builder=%s job=%s CodeSha256=%s\n' "$path" "$i" "$took" "$builder" "${job:--}" "$sha"
  done
done
fast=$(median <<<"${times[function]# }")
batch=$(median <<<"${times[batch]# }")
echo
echo "median request -> ARN: fast builder ${fast} s, Batch path (local stand-in) ${batch} s; Batch/fast = $(awk -v a="$batch" -v b="$fast" 'BEGIN { printf "%.2f", a / b }')x"
echo "the fast builder's own steps (its log):"
grep -h 'install finished\|zip written\|fast build uploaded' "$local_dir/fast-builder.log" | tail -n 3 | sed 's/^/  /'
