# shellcheck shell=bash
# Sourced by the benchmarks that compare with the AWS command line: puts the
# one operators reach for on PATH, from PyPI into a virtualenv of its own
# when none is there.
if ! command -v aws >/dev/null; then
  venv="$HERD_CACHE_DIR/awscli"
  if [[ ! -x "$venv/bin/aws" ]]; then
    log "installing the AWS command line into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet awscli
  fi
  PATH="$venv/bin:$PATH"
fi
