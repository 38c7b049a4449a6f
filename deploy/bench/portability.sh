#!/usr/bin/env bash
# Export and import benchmark: a throwaway local stack with one Herd
# installation and, for each size given (MiB of database and media), an
# instance filled with a fixture of about that size, exported through Herd's
# API beside a backup made by hand (`pg_dump -Fc`, `aws s3 cp`, `tar`), then
# deleted and imported again from its archive. Prints one JSON object per
# size on stdout; progress goes to stderr. See docs/benchmarks.md.
#
#   deploy/bench/portability.sh SIZE_MB [SIZE_MB...]
#
# HERD_BENCH_ARGS passes extra options to `herd-bench portability` (e.g.
# "--seed 2"); `herd-bench portability --help` lists them.
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"
cd "$HERD_REPO_ROOT"

[[ $# -ge 1 ]] || die "usage: deploy/bench/portability.sh SIZE_MB [SIZE_MB...]"
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
  "$bin/herd-bench" portability --sizes-mb "$(IFS=,; echo "$*")" --herd "$bin/herd" \
    --work-dir "$state/bench" ${HERD_BENCH_ARGS:-}
) || die "the export and import benchmark failed"
