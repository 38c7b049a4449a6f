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
# HERD_BENCH_ARGS passes extra options to `herd-bench migration`;
# HERD_BENCH_ARGS="--object-store local-b" moves the media as well, to the
# stack's second Garage registered under that name.
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -ge 1 ]] || die "usage: deploy/bench/migration.sh SIZE_MB [SIZE_MB...]"
for size in "$@"; do
  [[ "$size" =~ ^[1-9][0-9]*$ ]] || die "a size is a positive number of MiB, not $size"
done
# shellcheck source=aws.sh
source "$HERD_REPO_ROOT/deploy/bench/aws.sh"
bench_build
bench_on_fresh_stack "" "move" migration --sizes-mb "$(IFS=,; echo "$*")"
