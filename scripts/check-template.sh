#!/usr/bin/env bash
# Every check of template.yaml (issue 5), each with its counts; exits non-zero when any check fails.
#
#   1. cfn-lint template.yaml                      no errors (warnings are counted and shown)
#   2. sam validate --lint --region us-east-1      valid SAM template
#   3. checkov -f template.yaml                    no failed checks; every suppression carries a comment
#   4. cargo test --test integration template::    template == code (environment, S3 filter, binaries, IAM)
#   5. hadolint builder/Dockerfile                 no findings (when the Dockerfile exists)
#   6. sam build (arm64, no Docker)                every .aws-sam/build/*/bootstrap is an AArch64 ELF executable
#
# Usage: scripts/check-template.sh [--no-build] [--no-test]
#   --no-build  skip step 6 (a release cross-build of the whole crate: minutes on a small machine)
#   --no-test   skip step 4 (when `cargo test` runs anyway)
# Tools come from scripts/bootstrap.sh: $repo/.tools/venv (cfn-lint, checkov, hadolint) and $repo/.tools/venv-sam (sam,
# cargo-lambda, ziglang); LAYERFORGE_TOOLS overrides the .tools directory. A missing tool is a failure.
# sam build runs cargo-lambda in the source tree with cargo's target directory (./target, or $CARGO_TARGET_DIR),
# so compiled dependencies are kept between runs.
set -uo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
tools=${LAYERFORGE_TOOLS:-$repo/.tools}
venv=$tools/venv/bin
sam_venv=$tools/venv-sam/bin
template=$repo/template.yaml
export SAM_CLI_TELEMETRY=0

run_build=1
run_test=1
for arg in "$@"; do
  case $arg in
    --no-build) run_build=0 ;;
    --no-test) run_test=0 ;;
    -h | --help) sed -n '2,18p' "$0"; exit 0 ;;
    *) echo "check-template: unknown argument $arg" >&2; exit 2 ;;
  esac
done

failures=0
summary=()
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT

# record NAME STATUS DETAIL SECONDS
record() {
  summary+=("$(printf '%-14s %-4s %5ss  %s' "$1" "$2" "$4" "$3")")
  if [ "$2" != ok ]; then failures=$((failures + 1)); fi
}

need() {
  if [ ! -x "$1" ]; then
    echo "check-template: $1 is missing (run scripts/bootstrap.sh)" >&2
    return 1
  fi
}

cd "$repo" || exit 2

# 1. cfn-lint ---------------------------------------------------------------------------------------------------
start=$SECONDS
if need "$venv/cfn-lint"; then
  "$venv/cfn-lint" --format parseable "$template" >"$log/cfn-lint" 2>&1
  rc=$?
  cat "$log/cfn-lint"
  errors=$(grep -cE ':E[0-9]{4}:' "$log/cfn-lint")
  warnings=$(grep -cE ':W[0-9]{4}:' "$log/cfn-lint")
  # cfn-lint's exit code is a bit mask: 2 errors, 4 warnings, 8 informational; anything else (1) is a crash.
  if [ "$errors" -eq 0 ] && [ $((rc & ~(4 | 8))) -eq 0 ]; then status=ok; else status=FAIL; fi
  record cfn-lint "$status" "errors=$errors warnings=$warnings (exit $rc)" $((SECONDS - start))
else
  record cfn-lint FAIL "cfn-lint missing" 0
fi

# 2. sam validate --lint ----------------------------------------------------------------------------------------
start=$SECONDS
if need "$sam_venv/sam"; then
  "$sam_venv/sam" validate --lint --region us-east-1 --template "$template" >"$log/validate" 2>&1
  rc=$?
  cat "$log/validate"
  if [ $rc -eq 0 ] && grep -q "is a valid SAM Template" "$log/validate"; then
    record "sam validate" ok "valid SAM template (lint)" $((SECONDS - start))
  else
    record "sam validate" FAIL "exit $rc" $((SECONDS - start))
  fi
else
  record "sam validate" FAIL "sam missing" 0
fi

# 3. checkov ----------------------------------------------------------------------------------------------------
start=$SECONDS
if need "$venv/checkov"; then
  # --skip-download: no Prisma Cloud API calls (offline CI); the built-in checks run unchanged.
  "$venv/checkov" --framework cloudformation --skip-download --compact -f "$template" >"$log/checkov" 2>&1
  rc=$?
  # The failed and skipped checks with their resources and reasons; passed ones are only counted.
  awk '/^Check:/ { check = $0; next }
       /^[[:space:]]+(FAILED|SKIPPED) for/ { print check; print; next }
       /^[[:space:]]+Suppress comment:/ { print }' "$log/checkov"
  counts=$(grep -m1 -oE 'Passed checks: [0-9]+, Failed checks: [0-9]+, Skipped checks: [0-9]+' "$log/checkov")
  failed=$(sed -nE 's/.*Failed checks: ([0-9]+).*/\1/p' <<<"$counts")
  # Every `- id: CKV_...` under a checkov skip list must be followed by its `comment:` (the reason).
  uncommented=$(awk '
    /^[[:space:]]*- id: CKV_/ { if (pending) bad++; pending = 1; next }
    pending && /^[[:space:]]*comment:[[:space:]]*[^[:space:]]/ { pending = 0; next }
    pending { bad++; pending = 0 }
    END { if (pending) bad++; print bad + 0 }' "$template")
  skips=$(grep -cE '^[[:space:]]*- id: CKV_' "$template")
  if [ -n "$counts" ] && [ "$failed" = 0 ] && [ $rc -eq 0 ] && [ "$uncommented" -eq 0 ]; then
    status=ok
  else
    status=FAIL
    [ -n "$counts" ] || tail -20 "$log/checkov"
  fi
  record checkov "$status" "${counts:-no result} (exit $rc); suppressions=$skips uncommented=$uncommented" \
    $((SECONDS - start))
else
  record checkov FAIL "checkov missing" 0
fi

# 4. template == code -------------------------------------------------------------------------------------------
if [ $run_test = 1 ]; then
  start=$SECONDS
  cargo test --quiet --test integration template:: >"$log/test" 2>&1
  rc=$?
  grep -E '^(test |test result|failures:|---- )|panicked' "$log/test"
  result=$(grep -m1 -oE 'test result: [a-zA-Z]+\. [0-9]+ passed; [0-9]+ failed' "$log/test")
  if [ $rc -eq 0 ] && [ -n "$result" ]; then
    record "template tests" ok "$result" $((SECONDS - start))
  else
    tail -30 "$log/test"
    record "template tests" FAIL "${result:-cargo test exit $rc}" $((SECONDS - start))
  fi
fi

# 5. hadolint builder/Dockerfile (the builder image the job definitions run) ---------------------------------------
start=$SECONDS
if [ -f "$repo/builder/Dockerfile" ]; then
  if need "$venv/hadolint"; then
    "$venv/hadolint" --no-color "$repo/builder/Dockerfile" >"$log/hadolint" 2>&1
    rc=$?
    cat "$log/hadolint"
    findings=$(grep -cE 'DL[0-9]{4}|SC[0-9]{4}' "$log/hadolint")
    if [ $rc -eq 0 ]; then status=ok; else status=FAIL; fi
    record hadolint "$status" "findings=$findings (exit $rc)" $((SECONDS - start))
  else
    record hadolint FAIL "hadolint missing" 0
  fi
else
  echo "check-template: builder/Dockerfile is absent; hadolint not run"
  summary+=("$(printf '%-14s %-4s %5ss  %s' hadolint n/a 0 'no builder/Dockerfile yet')")
fi

# 6. sam build + AArch64 check ----------------------------------------------------------------------------------
# e_machine (ELF header offset 18, little-endian u16) of $1; empty when $1 is not an ELF file. `file` may be absent.
elf_machine() {
  [ "$(head -c 4 "$1" | od -An -c | tr -d ' ')" = '177ELF' ] || return 0
  od -An -tu2 -j18 -N2 "$1" | tr -d ' '
}

if [ $run_build = 1 ]; then
  start=$SECONDS
  if need "$sam_venv/sam" && need "$sam_venv/cargo-lambda"; then
    # sam's rust-cargolambda workflow runs `cargo lambda build --release --arm64`; cargo-lambda cross-compiles with
    # zig, which it finds as the ziglang module of the first python3 on PATH: the venv-sam one.
    if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx aarch64-unknown-linux-gnu; then
      rustup target add aarch64-unknown-linux-gnu
    fi
    # The five functions' binaries in one cargo invocation first: the same command sam runs for each (release,
    # --arm64), so sam's own per-function builds find them fresh. Built together, cargo links the five fat-LTO
    # binaries two at a time on two cores instead of one after another (docs/testing.md).
    bins=(submit-build publish-layer build-status fast-builder prune-layers)
    (cd "$repo" && PATH="$sam_venv:$PATH" cargo lambda build --release --arm64 "${bins[@]/#/--bin=}") \
      >"$log/prebuild" 2>&1 || tail -40 "$log/prebuild"
    echo "prebuild of ${bins[*]}: $((SECONDS - start)) s"
    PATH="$sam_venv:$PATH" "$sam_venv/sam" build --template "$template" >"$log/build" 2>&1
    rc=$?
    grep -E 'Building codeuri|Running RustCargoLambdaBuilder|Build Succeeded|Build Failed|Error' "$log/build"
    detail="exit $rc"
    status=ok
    [ $rc -eq 0 ] || { tail -40 "$log/build"; status=FAIL; }
    # The functions' bootstraps, and the fast builder's uv (UvLayer, unpacked from uv's aarch64 wheel by make).
    for fn in SubmitBuildFunction PublishLayerFunction BuildStatusFunction FastBuilderFunction PruneLayersFunction UvLayer; do
      bin=$repo/.aws-sam/build/$fn/bootstrap
      [ "$fn" = UvLayer ] && bin=$repo/.aws-sam/build/$fn/bin/uv
      if [ -f "$bin" ]; then
        machine=$(elf_machine "$bin")
        size=$(wc -c <"$bin" | tr -d ' ')
        echo "$bin: e_machine=${machine:-not-ELF} size=$size bytes"
        # 183 = EM_AARCH64
        [ "$machine" = 183 ] || status=FAIL
        detail="$detail; $fn: e_machine=${machine:-none} ${size}B"
      else
        echo "$bin is missing" >&2
        status=FAIL
        detail="$detail; $fn: no bootstrap"
      fi
    done
    record "sam build" "$status" "$detail" $((SECONDS - start))
  else
    record "sam build" FAIL "sam or cargo-lambda missing" 0
  fi
fi

echo
echo "check-template summary:"
printf '  %s\n' "${summary[@]}"
if [ $failures -gt 0 ]; then
  echo "check-template: $failures check(s) failed" >&2
  exit 1
fi
echo "check-template: all checks passed"
