#!/usr/bin/env bash
# Move benchmark: a throwaway local stack (two clusters, two database
# servers) with one Herd installation and, for each size given (MiB of
# database and media), an instance filled with a fixture of about that size,
# moved to the other cluster and database server by hand as an operator would
# (suspend, `pg_dump -Fc | pg_restore`, `aws s3 sync`, resume), then by Herd.
# Prints one JSON object per size with both write freezes on stdout; progress
# goes to stderr. See docs/benchmarks.md.
#
#   deploy/bench/migration.sh SIZE_MB [SIZE_MB...]
#
# HERD_BENCH_ARGS passes extra options to `herd-bench migration`.
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
cd "$HERD_REPO_ROOT"

[[ $# -ge 1 ]] || die "usage: deploy/bench/migration.sh SIZE_MB [SIZE_MB...]"
for size in "$@"; do
  [[ "$size" =~ ^[1-9][0-9]*$ ]] || die "a size is a positive number of MiB, not $size"
done
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HERD_CACHE_DIR/target}"
# shellcheck source=aws.sh
source "$HERD_REPO_ROOT/deploy/bench/aws.sh"

log "building herd and herd-bench (release)"
cargo build --release --locked --bin herd --bin herd-bench
bin="$CARGO_TARGET_DIR/release"

state="$(mktemp -d "${TMPDIR:-/tmp}/herd-bench.XXXXXX")"
(
  trap 'bash deploy/stack.sh down --state-dir "$state" >&2; rm -rf "$state"' EXIT
  bash deploy/stack.sh up --state-dir "$state" --free-ports >&2
  # shellcheck disable=SC1091
  source "$state/env"
  # shellcheck disable=SC2086
  "$bin/herd-bench" migration --sizes-mb "$(IFS=,; echo "$*")" --herd "$bin/herd" \
    --work-dir "$state/bench" ${HERD_BENCH_ARGS:-}
) || die "the move benchmark failed"
