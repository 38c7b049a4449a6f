#!/usr/bin/env bash
# Helm, the client the chart in charts/herd is checked and rendered with. No
# daemon: start only tells the tests where the binary is.
# Usage: helm.sh install | start STATE_DIR | stop STATE_DIR | status STATE_DIR
#
# start writes STATE_DIR/env.d/helm.env: export HERD_HELM=...
# shellcheck source=../lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/common.sh"

HELM_VERSION=v3.22.0
# The Kubernetes version `helm template` and `helm lint` assume without a
# cluster (helm's own release build derives it from its client-go, v0.37).
HELM_KUBE_MINOR=37
HELM_HOME="$HERD_CACHE_DIR/bin/helm-$HELM_VERSION"
HELM_BIN="$HELM_HOME/helm"

install() {
  [[ -x "$HELM_BIN" ]] && return 0
  cache_lock helm
  [[ -x "$HELM_BIN" ]] && return 0
  command -v go >/dev/null || die "go not found: install a Go toolchain first"
  log "building helm $HELM_VERSION (first time only; a few minutes)"
  # Under the lock no other build runs: temp dirs left here are from
  # interrupted builds.
  rm -rf "$HERD_CACHE_DIR/bin/.helm-$HELM_VERSION."*
  local tmp ldflags pkg
  tmp="$(mktemp -d "$HERD_CACHE_DIR/bin/.helm-$HELM_VERSION.XXXXXX")"
  chmod 755 "$tmp"
  # The flags of helm's Makefile for a release build, so `helm version` and
  # the assumed Kubernetes version are those of a released helm.
  ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$HELM_KUBE_MINOR"
  done
  # helm's module is installable as is; run outside any module of ours.
  if ! (cd "$tmp" && env GOFLAGS="-trimpath -buildvcs=false" CGO_ENABLED=0 GOBIN="$tmp" \
    go install -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" >&2); then
    rm -rf "$tmp"
    die "go install helm $HELM_VERSION failed"
  fi
  mv -T "$tmp" "$HELM_HOME"
  log "helm installed in $HELM_HOME"
}

start() {
  local state
  state="$(cd "$1" && pwd)"
  [[ -x "$HELM_BIN" ]] || die "helm $HELM_VERSION is not installed: run '$0 install'"
  printf 'export HERD_HELM=%q\n' "$HELM_BIN" | write_env_file "$state" helm
}

stop() {
  local state
  state="$(cd "$1" && pwd)"
  rm -f "$state/env.d/helm.env"
}

status() {
  "$HELM_BIN" version --short >/dev/null
}

component_main "$@"
