#!/usr/bin/env bash
# Fleet upgrade benchmark: for each N given, a throwaway local stack, N
# instances ordered through Herd's API on one version and upgraded to the next
# by one fleet upgrade in waves, then the same N applied by a kubectl loop and
# upgraded by an operator's kubectl script. Prints one JSON object per N on
# stdout; progress goes to stderr. See docs/benchmarks.md.
#
#   deploy/bench/upgrade.sh N [N...]
#
# HERD_BENCH_ARGS passes extra options to `herd-bench upgrade` (e.g.
# "--wave-size 50"); `herd-bench upgrade --help` lists them.
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
cd "$HERD_REPO_ROOT"

[[ $# -ge 1 ]] || die "usage: deploy/bench/upgrade.sh N [N...]"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HERD_CACHE_DIR/target}"

log "building herd and herd-bench (release)"
cargo build --release --locked --bin herd --bin herd-bench
bin="$CARGO_TARGET_DIR/release"

# Room for every pod of 2N small instances, the rollouts' surge and the
# migration Jobs, on fake nodes of 32 CPUs.
nodes_for() { echo $((2 * $1 * 20 / 10 / 32 + 3)); }

for n in "$@"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number, not $n"
  state="$(mktemp -d "${TMPDIR:-/tmp}/herd-bench.XXXXXX")"
  (
    trap 'bash deploy/stack.sh down --state-dir "$state" >&2; rm -rf "$state"' EXIT
    HERD_KUBE_NODES="$(nodes_for "$n")" bash deploy/stack.sh up --state-dir "$state" --free-ports >&2
    # shellcheck disable=SC1091
    source "$state/env"
    # shellcheck disable=SC2086
    "$bin/herd-bench" upgrade --instances "$n" --herd "$bin/herd" \
      --work-dir "$state/bench" ${HERD_BENCH_ARGS:-}
  ) || die "the benchmark of $n instances failed"
done
