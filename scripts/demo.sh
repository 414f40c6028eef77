#!/usr/bin/env bash
# Runs the demo (examples/demo): installs the workspace first.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PWD/.tmp/bin:$PATH"   # pnpm shim, if setup.sh needed one
bash scripts/setup.sh
# Arguments go to the package's start script as they are (pnpm would pass a
# literal "--" on to the program).
exec pnpm --fail-if-no-match --filter @machinery-ts/demo start "$@"
