#!/usr/bin/env bash
# The performance benchmark of issue 14 (not a test: it prints figures and asserts nothing). In one run:
#   1. end to end, layer-builder (default installer: uv when it runs here) against the original tool's procedure
#      (`pip install -r … -t python/lib/python3.11/site-packages`, then `zip -r`), on requests+httpx and
#      numpy+pandas, cold package caches, Python 3.11 native, alternating runs; the ratio of the medians;
#   2. the zip stage (`layer-builder --bench-zip-tree`: collect + write_zip) against `zip -r` on the same
#      tree (the original procedure's numpy+pandas tree, bytecode removed so both zip the same files): time,
#      CPU time, sizes, and whether two zips of the tree have the same sha256;
#   3. the size of each release binary (and of sam build's arm64 bootstraps when .aws-sam/build has them);
#   4. each Lambda function's init time and peak RSS under a Runtime API stub (scripts/bench_init.py);
#   5. the cold import time of the built layer (issue 21): numpy+pandas and requests+httpx+pydantic+boto3, each
#      as the original procedure zipped it (pip's timestamp bytecode, real dates), as layer-builder --no-bytecode
#      builds it, as layer-builder builds it (unchecked-hash bytecode) and, for comparison, compiled with
#      checked-hash; each unpacked with unzip (dates kept) into a read-only folder and imported by fresh
#      interpreters as user 65534 (scripts/bench_import.py); also whether two builds of the layer are identical.
#
# usage: scripts/bench.sh            (BENCH_RUNS=N alternating runs per set, default 3, in section 5 default 5;
#                                     BENCH_ONLY=import: section 5 alone (after the release build); BENCH_BASELINE,
#                                     release binaries of an earlier commit to compare with (see below); BENCH_PYTHON,
#                                     default /usr/bin/python3.11: as root the builder installs as user 65534, which
#                                     can't run a Python under /root such as pyenv's, so the baseline uses the same
#                                     one)
# Needs: Debian's zip and unzip (apt-get install zip unzip), setpriv (util-linux) when run as root, python3.11
# with pip, uv (.tools/venv/bin, scripts/bootstrap.sh), the package index. Builds the release binaries first
# (cargo build --release: minutes on two cores).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
export PATH="$root/.tools/venv/bin:$PATH"
py=${BENCH_PYTHON:-/usr/bin/python3.11}
runs=${BENCH_RUNS:-3}
only=${BENCH_ONLY:-}
case "$only" in
    "" | import) ;;
    *) echo "bench: BENCH_ONLY=$only: the only section that runs alone is import" >&2; exit 2 ;;
esac
command -v zip >/dev/null || { echo "bench: zip is missing (apt-get install zip)" >&2; exit 2; }
command -v unzip >/dev/null || { echo "bench: unzip is missing (apt-get install unzip)" >&2; exit 2; }
if [ "$(id -u)" = 0 ]; then
    command -v setpriv >/dev/null || { echo "bench: setpriv is missing (apt-get install util-linux)" >&2; exit 2; }
fi
command -v uv >/dev/null || { echo "bench: uv is missing (scripts/bootstrap.sh)" >&2; exit 2; }
"$py" -m pip --version >/dev/null || { echo "bench: $py has no pip" >&2; exit 2; }

echo "== building release binaries (cargo build --release --bins)"
cargo build --release --locked --bins 2>&1 | tail -n 1
bin=${CARGO_TARGET_DIR:-$root/target}/release

work=$(mktemp -d /tmp/layerforge-bench.XXXXXX)
chmod 755 "$work"   # the builder's installer runs as an unprivileged user
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT   # section 5 leaves read-only folders
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

# 5. Cold import time of the built layer (issue 21 item 5), as Lambda imports it: each layer's zip unpacked with
# unzip (which keeps the entries' dates, as Lambda's unpacking does; Python's zipfile would not) into a folder
# made read-only, then fresh interpreters import from it as user 65534 (scripts/bench_import.py), so that a
# module without valid bytecode is compiled from source on every run, as under Lambda's read-only /opt.
import_layer() {   # OUT.zip REQUIREMENTS [FLAG...]: layerforge's layer, python3.11, this machine's architecture
    local out=$1 reqs=$2
    shift 2
    LAYERFORGE_PYTHON="$py" "$bin/layer-builder" --name bench --requirements "$reqs" --runtime python3.11 \
        --architecture "$(uname -m)" --out "$out" "$@" >"$out.summary" 2>"$work/builder.log" \
        || { cat "$work/builder.log" >&2; exit 1; }
}
unpack() {   # ZIP DIR
    rm -rf "$2" && mkdir -p "$2"
    unzip -q "$1" -d "$2"
}
sha() { sha256sum "$1" | cut -d' ' -f1; }
# The sets: requirements|statement.
import_sets=(
    "numpy==2.1.3 pandas==2.2.3|import numpy, pandas"
    'requests==2.32.3 httpx==0.27.2 pydantic==2.9.2 boto3==1.35.49|import requests, httpx, pydantic, boto3; boto3.client("s3", region_name="us-east-1")'
)
import_section() {
    local iruns=${BENCH_RUNS:-5} bytecode=yes entry reqs stmt w d sha1 sha2 name help
    help=$("$bin/layer-builder" --help)
    case "$help" in *--no-bytecode*) ;; *) bytecode=no ;; esac
    echo "== cold import time of the built layer (python3.11 $(uname -m), $("$py" --version), $(nproc) cores," \
        "load $(cut -d' ' -f1-3 /proc/loadavg))"
    echo "  original:     pip install -r … -t $site (pip's default: timestamp bytecode), then zip -r (real dates)"
    echo "  no-bytecode:  layer-builder --no-bytecode (what main shipped before issue 21)"
    echo "  layerforge:   layer-builder (default: unchecked-hash bytecode)"
    echo "  checked-hash: the no-bytecode layer's files compiled by compileall --invalidation-mode checked-hash"
    echo "                (same -s/-p as the builder; a measurement only)"
    echo "  each unpacked with unzip (dates kept), chmod -R a-w; page cache warm after one warm-up run per layer"
    if [ "$bytecode" = no ]; then
        echo "  NOTE: this layer-builder has no --no-bytecode (built before issue 21): its default layer is the"
        echo "        no-bytecode one; the layerforge (bytecode) layer is left out, and the reproducibility check"
        echo "        builds that one"
    fi
    for entry in "${import_sets[@]}"; do
        reqs=${entry%%|*} stmt=${entry#*|}
        w=$work/import
        if [ -e "$w" ]; then chmod -R u+w "$w" && rm -rf "$w"; fi
        mkdir -p "$w" && chmod 755 "$w"
        echo "set: $reqs; statement: $stmt"

        # 1. The original tool's procedure: pip's default compiles timestamp bytecode; zip -r keeps the real dates.
        d=$w/orig-tree
        mkdir -p "$d"
        tr ' ' '\n' <<<"$reqs" >"$w/requirements.txt"
        "$py" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
            -r "$w/requirements.txt" -t "$d/$site" >/dev/null
        (cd "$d" && zip -qr "$w/original.zip" python)
        rm -rf "$d"
        # 2. and 3. layerforge's layers; the default one twice, for reproducibility.
        local layers=(--layer original "$w/original" "$w/original.zip")
        if [ "$bytecode" = yes ]; then
            import_layer "$w/no-bytecode.zip" "${reqs// /|}" --no-bytecode
            import_layer "$w/layerforge.zip" "${reqs// /|}"
            import_layer "$w/layerforge-again.zip" "${reqs// /|}"
            layers+=(--layer no-bytecode "$w/no-bytecode" "$w/no-bytecode.zip")
            layers+=(--layer layerforge "$w/layerforge" "$w/layerforge.zip")
            sha1=$(sha "$w/layerforge.zip") sha2=$(sha "$w/layerforge-again.zip")
            echo "  layerforge's summary: $(grep -E '^(platform_mode|bytecode|bytecode_bytes|bytecode_seconds):' \
                "$w/layerforge.zip.summary" | paste -sd ';' | sed 's/;/; /g')"
        else
            import_layer "$w/no-bytecode.zip" "${reqs// /|}"
            import_layer "$w/no-bytecode-again.zip" "${reqs// /|}"
            layers+=(--layer no-bytecode "$w/no-bytecode" "$w/no-bytecode.zip")
            sha1=$(sha "$w/no-bytecode.zip") sha2=$(sha "$w/no-bytecode-again.zip")
        fi
        if [ "$sha1" = "$sha2" ]; then
            echo "  reproducible: layer-builder's default layer built twice, one sha256 ($sha1)"
        else
            echo "  NOT reproducible: layer-builder's default layer built twice: $sha1 $sha2"
        fi
        for name in original no-bytecode layerforge; do
            if [ -e "$w/$name.zip" ]; then unpack "$w/$name.zip" "$w/$name"; fi
        done
        # 4. The no-bytecode layer compiled with checked-hash, file names as the builder writes them.
        unpack "$w/no-bytecode.zip" "$w/checked-hash"
        PYTHONHASHSEED=0 "$py" -s -B -m compileall -q -f -j 0 --invalidation-mode checked-hash \
            -s "$w/checked-hash/$site" -p "/opt/$site" "$w/checked-hash/$site" >/dev/null \
            || echo "  (compileall: some modules did not compile; as in the builder, they get no bytecode)"
        layers+=(--layer checked-hash "$w/checked-hash" -)
        for name in original no-bytecode layerforge checked-hash; do
            if [ -d "$w/$name" ]; then chmod -R a-w "$w/$name"; fi
        done
        local target=()
        if [ "$bytecode" = yes ]; then target=(--target layerforge); fi
        "$py" scripts/bench_import.py --python "$py" --site "$site" --statement "$stmt" --runs "$iruns" \
            --baseline original "${target[@]}" "${layers[@]}"
    done
    chmod -R u+w "$work/import" && rm -rf "$work/import"
}
if [ "$only" = import ]; then
    import_section
    exit 0
fi

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

import_section
