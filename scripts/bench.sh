#!/usr/bin/env bash
# The performance benchmark of issue 14 (not a test: it prints figures and asserts nothing). In one run:
#   1. end to end, layer-builder (default installer: uv when it runs here) against the original tool's procedure
#      (`pip install -r … -t python/lib/python3.11/site-packages`, then `zip -r`), on requests+httpx and
#      numpy+pandas, cold package caches, Python 3.11 native, alternating runs; the ratio of the medians;
#   2. the zip stage (`layer-builder --bench-zip-tree`: collect + write_zip) against `zip -r` on the same
#      tree (the original procedure's numpy+pandas tree, bytecode removed so both zip the same files): time,
#      CPU time, sizes, and whether two zips of the tree have the same sha256;
#   3. the size of each release binary (and of sam build's arm64 bootstraps when .aws-sam/build has them);
#   4. each Lambda function's init time and peak RSS under a Runtime API stub (scripts/bench_init.py).
#
# usage: scripts/bench.sh            (BENCH_RUNS=N alternating runs per set, default 3; BENCH_BASELINE, release
#                                     binaries of an earlier commit to compare with (see below); BENCH_PYTHON, default
#                                     /usr/bin/python3.11: as root the builder installs as user 65534, which can't
#                                     run a Python under /root such as pyenv's, so the baseline uses the same one)
# Needs: Debian's zip (apt-get install zip), python3.11 with pip, uv (.tools/venv/bin, scripts/bootstrap.sh), the
# package index. Builds the release binaries first (cargo build --release: minutes on two cores).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.tools/venv/bin:$PATH"
py=${BENCH_PYTHON:-/usr/bin/python3.11}
runs=${BENCH_RUNS:-3}
command -v zip >/dev/null || { echo "bench: zip is missing (apt-get install zip)" >&2; exit 2; }
command -v uv >/dev/null || { echo "bench: uv is missing (scripts/bootstrap.sh)" >&2; exit 2; }
"$py" -m pip --version >/dev/null || { echo "bench: $py has no pip" >&2; exit 2; }

echo "== building release binaries (cargo build --release --bins)"
cargo build --release --locked --bins 2>&1 | tail -n 1
bin=${CARGO_TARGET_DIR:-$root/target}/release

work=$(mktemp -d /tmp/layerforge-bench.XXXXXX)
chmod 755 "$work"   # the builder's installer runs as an unprivileged user
trap 'rm -rf "$work"' EXIT
site=python/lib/python3.11/site-packages

now() { date +%s.%N; }
seconds() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
median() { tr ' ' '\n' | sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.2f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# The original tool's procedure, cold cache; leaves its tree in $work/orig.
original() {
    local reqs=$1 dir=$work/orig
    rm -rf "$dir" && mkdir -p "$dir"
    printf '%s\n' $reqs >"$work/requirements.txt"
    local start; start=$(now)
    "$py" -m pip install --quiet --no-cache-dir --disable-pip-version-check --root-user-action=ignore \
        -r "$work/requirements.txt" -t "$dir/$site" >/dev/null
    (cd "$dir" && zip -qr "$work/orig.zip" python)
    seconds "$start" "$(now)"
    rm -f "$work/orig.zip"
}

# layer-builder with its default installer, cold cache, Python 3.11 native; its summary goes to $work/summary.
builder() {
    local reqs=$1
    local start; start=$(now)
    UV_NO_CACHE=1 PIP_NO_CACHE_DIR=1 "$bin/layer-builder" --name bench --requirements "$(printf '%s\n' $reqs)" \
        --runtime python3.11 --platform-mode native --out "$work/new.zip" >"$work/summary" 2>"$work/builder.log" \
        || { cat "$work/builder.log" >&2; exit 1; }
    seconds "$start" "$(now)"
    rm -f "$work/new.zip"
}

summary_field() { sed -n "s/^$1[=: ]*//p" "$work/summary" | head -n 1; }

echo "== end to end, $runs alternating runs per set (cold caches, $("$py" --version), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg))"
for set in "requests==2.32.3 httpx==0.27.2" "numpy==2.1.3 pandas==2.2.3"; do
    orig_times="" new_times=""
    for _ in $(seq "$runs"); do
        orig_times+=" $(original "$set")"
        new_times+=" $(builder "$set")"
    done
    installer=$(grep -oE 'installer[^a-z]{1,4}(uv|pip)' "$work/builder.log" | head -n 1 | grep -oE '(uv|pip)$' || true)
    o=$(echo $orig_times | median) n=$(echo $new_times | median)
    echo "set: $set"
    echo "  original (pip -t + zip -r): $o s  [runs:$orig_times]"
    echo "  layer-builder (${installer:-default}): $n s  [runs:$new_times]"
    echo "  last builder run: install_seconds=$(summary_field install_seconds) zip_seconds=$(summary_field zip_seconds) check_seconds=$(summary_field check_seconds)"
    echo "  ratio original/layer-builder: $(ratio "$o" "$n")x (target >= 3x)"
done

echo "== zip stage against zip -r, same tree (numpy+pandas as the original procedure installed it, bytecode removed)"
find "$work/orig" -name __pycache__ -type d -prune -exec rm -rf {} +
find "$work/orig" \( -name '*.pyc' -o -name '*.pyo' \) -delete
zipr_times="" ours_times="" zipr_cpu="" ours_cpu="" shas=""
for _ in $(seq "$runs"); do
    rm -f "$work/zipr.zip" "$work/ours.zip"
    start=$(now)
    (cd "$work/orig" && /usr/bin/time -f %U+%S -o "$work/cpu" zip -qr "$work/zipr.zip" python)
    zipr_times+=" $(seconds "$start" "$(now)")"
    zipr_cpu+=" $(awk -F+ '{ printf "%.2f", $1 + $2 }' "$work/cpu")"
    start=$(now)
    line=$(/usr/bin/time -f %U+%S -o "$work/cpu" "$bin/layer-builder" --bench-zip-tree "$work/orig" "$work/ours.zip")
    ours_times+=" $(seconds "$start" "$(now)")"
    ours_cpu+=" $(awk -F+ '{ printf "%.2f", $1 + $2 }' "$work/cpu")"
    shas+=" $(sed -n 's/.*sha256=//p' <<<"$line")"
done
zr=$(echo $zipr_times | median) ou=$(echo $ours_times | median)
zrc=$(echo $zipr_cpu | median) ouc=$(echo $ours_cpu | median)
zr_size=$(stat -c %s "$work/zipr.zip") ou_size=$(stat -c %s "$work/ours.zip")
echo "  zip -r (Info-ZIP, level 6): $zr s wall, $zrc s CPU, $zr_size bytes  [runs:$zipr_times]"
echo "  layer-builder zip stage:     $ou s wall, $ouc s CPU, $ou_size bytes  [runs:$ours_times]"
echo "  ratio zip -r/ours: $(ratio "$zr" "$ou")x wall, $(ratio "$zrc" "$ouc")x CPU (target >= 3x); size ours/zip -r: $(ratio "$ou_size" "$zr_size")"
if [ "$(tr ' ' '\n' <<<"$shas" | sed '/^$/d' | sort -u | wc -l)" = 1 ]; then
    echo "  reproducible: the $runs zips have one sha256 ($(awk '{ print $1 }' <<<"$shas"))"
else
    echo "  NOT reproducible: sha256s$shas"
fi

mib() { awk -v s="$1" 'BEGIN { printf "%.2f", s / 1048576 }'; }
# BENCH_BASELINE: a folder of release binaries built from an earlier commit (for example
# `git worktree add /tmp/before <commit> && CARGO_TARGET_DIR=/tmp/before-target cargo build --release --bins` in
# it, then BENCH_BASELINE=/tmp/before-target/release): sizes, init and RSS are then printed for both, with ratios.
base=${BENCH_BASELINE:-}
echo "== binary sizes (release, $(uname -m), stripped; target: each Lambda function at most 10 MiB)"
for b in submit-build publish-layer build-status layer-builder; do
    size=$(stat -c %s "$bin/$b")
    line="  $b: $size bytes ($(mib "$size") MiB)"
    if [ -n "$base" ] && [ -e "$base/$b" ]; then
        old=$(stat -c %s "$base/$b")
        line+="; baseline $old bytes ($(mib "$old") MiB), ratio baseline/now $(ratio "$old" "$size")x"
    fi
    echo "$line"
done
for f in .aws-sam/build/*/bootstrap; do
    [ -e "$f" ] || continue
    size=$(stat -c %s "$f")
    echo "  sam build arm64 $f: $size bytes ($(mib "$size") MiB)"
done

echo "== handler init and peak RSS (Runtime API stub, 5 runs each; events needing no AWS call)"
echo '{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2026-01-01T00:00:00.000Z","Bucket":"layerforge-artifacts","RequestId":"1","HostId":"1"}' >"$work/test-event.json"
for pair in "submit-build:events/invalid/layer-name.json" "publish-layer:$work/test-event.json" \
    "build-status:events/status-invalid-both.json"; do
    name=${pair%%:*} event=${pair#*:}
    echo "  $name: $(python3 scripts/bench_init.py "$bin/$name" "$event" 5)"
    if [ -n "$base" ] && [ -e "$base/$name" ]; then
        echo "  $name (baseline): $(python3 scripts/bench_init.py "$base/$name" "$event" 5)"
    fi
done
