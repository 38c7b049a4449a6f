#!/usr/bin/env bash
# Provisioning benchmark: for each N given, a throwaway local stack, N
# instances ordered through Herd's API until all run, then the same N applied
# by a `kubectl apply --server-side` loop. Prints one JSON object per N on
# stdout; progress goes to stderr. See docs/benchmarks.md.
#
#   deploy/bench/provision.sh N [N...]
#
# HERD_BENCH_ARGS passes extra options to `herd-bench provision` (e.g.
# "--workers 32"); `herd-bench provision --help` lists them.
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
cd "$HERD_REPO_ROOT"

[[ $# -ge 1 ]] || die "usage: deploy/bench/provision.sh N [N...]"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HERD_CACHE_DIR/target}"

log "building herd and herd-bench (release)"
cargo build --release --locked --bin herd --bin herd-bench
bin="$CARGO_TARGET_DIR/release"

# Enough fake nodes of 32 CPUs for every pod of 2N small instances (Herd's N
# and the loop's N run side by side, 1.3 CPUs each, plus a setup Job while it
# runs), and a few to spare.
nodes_for() { echo $((2 * $1 * 15 / 10 / 32 + 3)); }

for n in "$@"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number, not $n"
  state="$(mktemp -d "${TMPDIR:-/tmp}/herd-bench.XXXXXX")"
  (
    trap 'bash deploy/stack.sh down --state-dir "$state" >&2; rm -rf "$state"' EXIT
    HERD_KUBE_NODES="$(nodes_for "$n")" bash deploy/stack.sh up --state-dir "$state" --free-ports >&2
    # shellcheck disable=SC1091
    source "$state/env"
    # shellcheck disable=SC2086
    "$bin/herd-bench" provision --instances "$n" --herd "$bin/herd" \
      --work-dir "$state/bench" ${HERD_BENCH_ARGS:-}
  ) || die "the benchmark of $n instances failed"
done
