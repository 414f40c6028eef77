#!/usr/bin/env bash
# The "restartable" Redis: 127.0.0.1:6391 with an append-only file (fsync on
# every write), so data survives a SHUTDOWN and start. Tests stop and start it.
# Its data live outside the checkout, in $MTS_STATE_DIR/redis-6391 (default
# /var/lib/machinery-ts/redis-6391 as root), so that whichever checkout
# restarts the server finds the same AOF.
#
# Usage: scripts/redis-6391.sh start|stop|restart|status
#   start    idempotent; returns once the server answers PONG (AOF loaded)
#   stop     SHUTDOWN (the AOF is fsynced) and wait until the port is free
set -euo pipefail

PORT=6391
if [ -n "${MTS_STATE_DIR:-}" ]; then state_dir=$MTS_STATE_DIR
elif [ "$(id -u)" = 0 ]; then state_dir=/var/lib/machinery-ts
else state_dir="${XDG_STATE_HOME:-$HOME/.local/state}/machinery-ts"
fi
DIR="$state_dir/redis-$PORT"

log() { printf 'redis-%s: %s\n' "$PORT" "$*"; }
die() { printf 'redis-%s: %s\n' "$PORT" "$*" >&2; exit 1; }

pong() { [ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null)" = PONG ]; }
port_taken() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT" 2>/dev/null; }

start() {
  if pong; then
    local aof
    aof=$(redis-cli -h 127.0.0.1 -p "$PORT" config get appendonly 2>/dev/null | tail -n 1)
    [ "$aof" = yes ] || log "warning: the server on $PORT runs with appendonly=$aof"
    log "127.0.0.1:$PORT already up"
    return 0
  fi
  command -v redis-server >/dev/null || die "redis-server is not installed (run scripts/services.sh)"
  # A server still loading its AOF answers -LOADING, not PONG: give it time.
  local i
  for i in $(seq 1 50); do
    port_taken || break
    pong && { log "127.0.0.1:$PORT already up"; return 0; }
    sleep 0.1
  done
  port_taken && die "port 127.0.0.1:$PORT is taken by something that is not a Redis answering PING; free it"
  mkdir -p "$DIR"
  redis-server --daemonize yes --bind 127.0.0.1 --port "$PORT" --protected-mode yes \
    --dir "$DIR" --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log" \
    --save '' --appendonly yes --appendfsync always </dev/null >/dev/null 2>&1 \
    || die "redis-server failed to start; see $DIR/redis.log"
  for i in $(seq 1 300); do
    pong && { log "127.0.0.1:$PORT started (AOF in $DIR)"; return 0; }
    sleep 0.1
  done
  die "did not answer PONG within 30 s; see $DIR/redis.log"
}

stop() {
  if pong; then
    redis-cli -h 127.0.0.1 -p "$PORT" shutdown >/dev/null 2>&1 || true
  fi
  local i
  for i in $(seq 1 100); do
    port_taken || { log "stopped"; return 0; }
    sleep 0.1
  done
  die "still listening on 127.0.0.1:$PORT after SHUTDOWN"
}

case "${1:-start}" in
  start) start ;;
  stop) stop ;;
  restart) stop; start ;;
  status) if pong; then log "answers on 127.0.0.1:$PORT"; else log "down"; exit 1; fi ;;
  *) die "usage: $0 start|stop|restart|status" ;;
esac
