#!/usr/bin/env bash
# Runs every check and test of Herd on a brand-new or a warm machine:
#   formatting, lints, the committed CRD being current, unit tests, and the
#   end-to-end tests against a throwaway local stack on free ports (so a
#   running development stack is never disturbed).
# Extra arguments go to `cargo test`, e.g. `deploy/test.sh -p herd-e2e`.
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"
cd "$HERD_REPO_ROOT"

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HERD_CACHE_DIR/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

ensure_rust_tools() {
  command -v cargo >/dev/null || die "cargo is not installed (https://rustup.rs)"
  if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
  fi
}

ensure_rust_tools
started=$SECONDS

log "installing the stack's components (cached after the first run)"
bash deploy/stack.sh install

log "cargo fmt --check"
cargo fmt --all --check

log "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

log "building the tests"
cargo test --workspace --locked --no-run

state="$(mktemp -d "${TMPDIR:-/tmp}/herd-test.XXXXXX")"
cleanup() {
  local status=$?
  bash deploy/stack.sh down --state-dir "$state" || status=1
  rm -rf "$state"
  exit "$status"
}
trap cleanup EXIT

log "starting a throwaway stack in $state"
bash deploy/stack.sh up --state-dir "$state" --free-ports
# shellcheck disable=SC1091
source "$state/env"

log "running the tests"
results="$state/test-output.log"
status=0
cargo test --workspace --locked "$@" -- --show-output 2>&1 | tee "$results" || status=$?
# One closing line over every test binary, as the per-binary lines are many.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($i ~ /^passed;?$/) p += $(i-1); if ($i ~ /^failed;?$/) f += $(i-1); if ($i ~ /^ignored;?$/) s += $(i-1) } }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' "$results"
[[ "$status" -eq 0 ]] || die "tests failed"
log "all checks passed in $((SECONDS - started))s"
