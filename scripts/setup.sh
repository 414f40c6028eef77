#!/usr/bin/env bash
# Makes the workspace ready to build and test: pnpm 10.34.8 (installed with
# npm when missing) and the workspace's npm packages (pnpm install, frozen to
# pnpm-lock.yaml). Safe to run again; fast when nothing changed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PNPM_VERSION=10.34.8
log() { printf 'setup: %s\n' "$*"; }

pnpm_cmd=(pnpm)
if [ "$(pnpm --version 2>/dev/null || true)" != "$PNPM_VERSION" ]; then
  log "installing pnpm@$PNPM_VERSION with npm"
  if timeout 300 npm install -g --no-fund --no-audit --loglevel=error "pnpm@$PNPM_VERSION" >/dev/null \
    && hash -r && [ "$(pnpm --version 2>/dev/null || true)" = "$PNPM_VERSION" ]; then
    :
  else
    log "global install failed or is not on PATH; using npx pnpm@$PNPM_VERSION"
    pnpm_cmd=(npx --yes "pnpm@$PNPM_VERSION")
    # Later scripts call plain `pnpm`: give them a shim on PATH.
    shim_dir="$PWD/.tmp/bin"
    mkdir -p "$shim_dir"
    printf '#!/bin/sh\nexec npx --yes pnpm@%s "$@"\n' "$PNPM_VERSION" >"$shim_dir/pnpm"
    chmod +x "$shim_dir/pnpm"
  fi
fi

install_args=(install --prefer-offline --reporter=append-only)
[ -f pnpm-lock.yaml ] && install_args+=(--frozen-lockfile)
if ! out=$("${pnpm_cmd[@]}" "${install_args[@]}" 2>&1); then
  printf '%s\n' "$out" >&2
  log "pnpm install failed" >&2
  exit 1
fi
# Keep the log short: drop pnpm's progress and "up to date" chatter.
printf '%s\n' "$out" | grep -vE '^(Progress:|Already up to date|Done in |Scope: |Lockfile is up to date|$)' || true
log "pnpm $("${pnpm_cmd[@]}" --version), node $(node --version): workspace installed"
