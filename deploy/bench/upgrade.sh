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
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -ge 1 ]] || die "usage: deploy/bench/upgrade.sh N [N...]"
for n in "$@"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number, not $n"
done
bench_build
# The second cluster and its Garage serve only moves between clusters; idle,
# they still took about 7% of the CPU of an N = 1,000 run.
export HERD_STACK_SKIP="${HERD_STACK_SKIP:-kube-b garage-b}"
for n in "$@"; do
  # Room for every pod of 2N small instances, the rollouts' surge and the
  # migration Jobs, on fake nodes of 32 CPUs.
  bench_on_fresh_stack $((2 * n * 20 / 10 / 32 + 3)) "fleet upgrade ($n instances)" \
    upgrade --instances "$n"
done
