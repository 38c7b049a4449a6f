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
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[[ $# -ge 1 ]] || die "usage: deploy/bench/portability.sh SIZE_MB [SIZE_MB...]"
for size in "$@"; do
  [[ "$size" =~ ^[1-9][0-9]*$ ]] || die "a size is a positive number of MiB, not $size"
done
# shellcheck source=aws.sh
source "$HERD_REPO_ROOT/deploy/bench/aws.sh"
bench_build
bench_on_fresh_stack "" "export and import" portability --sizes-mb "$(IFS=,; echo "$*")"
