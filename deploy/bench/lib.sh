# shellcheck shell=bash
# Sourced by every benchmark script: the release build of herd and
# herd-bench, and a run of `herd-bench` on a throwaway stack of its own.
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
cd "$HERD_REPO_ROOT"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HERD_CACHE_DIR/target}"
BENCH_BIN="$CARGO_TARGET_DIR/release"

bench_build() {
  log "building herd and herd-bench (release)"
  cargo build --release --locked --bin herd --bin herd-bench
}

# bench_on_fresh_stack NODES WHAT SUBCOMMAND [ARGS...]: starts a stack on free
# ports (with NODES fake nodes, or the stack's default when empty), runs
# `herd-bench SUBCOMMAND ARGS...` against it with $HERD_BENCH_ARGS, and stops
# the stack; WHAT names the benchmark in the error when it fails.
bench_on_fresh_stack() {
  local nodes=$1 what=$2
  shift 2
  local state
  state="$(mktemp -d "${TMPDIR:-/tmp}/herd-bench.XXXXXX")"
  (
    trap 'bash deploy/stack.sh down --state-dir "$state" >&2; rm -rf "$state"' EXIT
    [[ -z "$nodes" ]] || export HERD_KUBE_NODES="$nodes"
    # The API server's audit log lets a benchmark count requests per client.
    export HERD_KUBE_AUDIT=1
    # `set -e` does not hold in a subshell whose status is tested: each
    # step stops the run itself.
    bash deploy/stack.sh up --state-dir "$state" --free-ports >&2 || exit 1
    # shellcheck disable=SC1091
    source "$state/env" || exit 1
    # shellcheck disable=SC2086
    "$BENCH_BIN/herd-bench" "$@" --herd "$BENCH_BIN/herd" --work-dir "$state/bench" \
      ${HERD_BENCH_ARGS:-}
  ) || die "the $what benchmark failed"
}
