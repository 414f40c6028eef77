#!/usr/bin/env bash
# Runs the benchmarks (bench/) against the project's servers: installs the
# workspace, starts the servers (scripts/services.sh), passes arguments on:
#   (none)            full run, Redis and RabbitMQ cases → BENCHMARKS.md + bench/results/latest.json
#   --quick           short run (< 2 min) → bench/results/quick.{md,json}
#   --n N --rounds R --latency L --warmup W
#   --systems machinery,machinery-lean,bullmq,bee,raw,machinery-amqp,machinery-amqp-null,amqplib,amqplib-go
#                     narrower runs → bench/results/partial.{md,json}
#   --soak            adds the worker-memory soak, 1M tasks (minutes); --soak-only runs just that,
#                     --soak-n N shortens it (→ partial)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export PATH="$PWD/.tmp/bin:$PATH"   # pnpm shim, if setup.sh needed one
bash scripts/setup.sh
# machinery-ts runs as an application would: its packages built by tsc (dist/), as the peers
# run from npm. (Under tsx, esbuild's keepNames wrapper, run for every closure a task creates, was
# ~5% of the worker's CPU in a profile.)
pnpm --silent build >/dev/null
bash scripts/services.sh
while IFS='=' read -r key value; do
  [ -n "$key" ] || continue
  if [ -z "${!key:-}" ]; then export "$key=$value"; fi
done <.tmp/services.env
# Arguments go to the package's start script as they are (pnpm would pass a
# literal "--" on to the program).
exec pnpm --fail-if-no-match --filter @machinery-ts/bench start "$@"
