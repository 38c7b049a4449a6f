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
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -ge 1 ]] || die "usage: deploy/bench/provision.sh N [N...]"
for n in "$@"; do
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "N must be a positive number, not $n"
done
bench_build
# The second cluster and its Garage serve only moves between clusters; idle,
# they still took about 7% of the CPU of an N = 1,000 run.
export HERD_STACK_SKIP="${HERD_STACK_SKIP:-kube-b garage-b}"
for n in "$@"; do
  # Enough fake nodes of 32 CPUs for every pod of 2N small instances (Herd's
  # N and the loop's N run side by side, 1.3 CPUs each, plus a setup Job
  # while it runs), and a few to spare.
  bench_on_fresh_stack $((2 * n * 15 / 10 / 32 + 3)) "provisioning ($n instances)" \
    provision --instances "$n"
done
