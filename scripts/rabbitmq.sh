#!/usr/bin/env bash
# The project's own RabbitMQ node, on loopback only, apart from any other
# RabbitMQ on the machine:
#   node machinery-ts@localhost, AMQP 127.0.0.1:5673, Erlang distribution
#   127.0.0.1:25673, epmd on 127.0.0.1 (port 4369, possibly shared with
#   another node: names differ), its own cookie, config, data and logs under
#   $MTS_STATE_DIR/rabbitmq (default /var/lib/machinery-ts/rabbitmq as root).
# The global /etc/rabbitmq/rabbitmq-env.conf is neither read nor written.
#
# Usage: scripts/rabbitmq.sh start|stop|restart|status|ctl <rabbitmqctl args>
#   start    idempotent; returns once AMQP answers on 127.0.0.1:5673
#   stop     stops the node (all connections dropped)
#   restart  stop_app + start_app: closes every client connection and the
#            listener, keeps the Erlang VM (faster than a full node restart)
#   restart-node  full stop + start of the node
#   ctl ...  rabbitmqctl against this node
set -euo pipefail

AMQP_PORT=5673
DIST_PORT=$((AMQP_PORT + 20000))
NODE=machinery-ts@localhost
RMQ_BIN=/usr/lib/rabbitmq/bin
export PATH="$PATH:/usr/sbin:/sbin"

if [ -n "${MTS_STATE_DIR:-}" ]; then state_dir=$MTS_STATE_DIR
elif [ "$(id -u)" = 0 ]; then state_dir=/var/lib/machinery-ts
else state_dir="${XDG_STATE_HOME:-$HOME/.local/state}/machinery-ts"
fi
BASE="$state_dir/rabbitmq"

log() { printf 'rabbitmq: %s\n' "$*"; }
die() { printf 'rabbitmq: %s\n' "$*" >&2; exit 1; }

# --------------------------------------------------------------- environment
# Everything through RABBITMQ_* variables; RABBITMQ_CONF_ENV_FILE points at our
# own (empty) file so that the global rabbitmq-env.conf is not sourced.
rmq_env() {
  export HOME="$BASE"   # own Erlang cookie: $BASE/.erlang.cookie
  export RABBITMQ_NODENAME="$NODE"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$AMQP_PORT"
  export RABBITMQ_DIST_PORT="$DIST_PORT"
  export RABBITMQ_CONF_ENV_FILE="$BASE/rabbitmq-env.conf"
  export RABBITMQ_CONFIG_FILE="$BASE/rabbitmq.conf"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$BASE/advanced.config"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$BASE/enabled_plugins"
  export RABBITMQ_MNESIA_BASE="$BASE/mnesia"
  export RABBITMQ_LOG_BASE="$BASE/log"
  export RABBITMQ_PID_FILE="$BASE/$NODE.pid"
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export RABBITMQ_CTL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
  export ERL_EPMD_ADDRESS=127.0.0.1
}

write_config() {
  mkdir -p "$BASE/mnesia" "$BASE/log"
  : >"$BASE/rabbitmq-env.conf"
  printf '[].\n' >"$BASE/enabled_plugins"   # no management plugin, no extra listeners
  printf '[].\n' >"$BASE/advanced.config"
  cat >"$BASE/rabbitmq.conf" <<EOF
# written by scripts/rabbitmq.sh
listeners.tcp.default = 127.0.0.1:$AMQP_PORT
loopback_users.guest = true
log.console = false
log.file.level = warning
disk_free_limit.absolute = 50MB
EOF
}

ctl() { rmq_env; timeout "${CTL_TIMEOUT:-60}" "$RMQ_BIN/rabbitmqctl" -n "$NODE" "$@"; }

# True when something on 127.0.0.1:$AMQP_PORT answers an AMQP 0-9-1 protocol
# header with a method frame (Connection.Start).
amqp_up() {
  local first
  first=$(timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$AMQP_PORT || exit 1
    printf 'AMQP\0\0\x09\x01' >&3; head -c 1 <&3 | od -An -tx1" 2>/dev/null) || return 1
  [ "${first// /}" = 01 ]
}
port_taken() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

wait_amqp() {
  local deadline=$((SECONDS + ${1:-120}))
  while [ $SECONDS -lt $deadline ]; do
    amqp_up && return 0
    sleep 0.2
  done
  return 1
}

node_running() { CTL_TIMEOUT=20 ctl ping >/dev/null 2>&1; }

start() {
  if amqp_up; then
    log "127.0.0.1:$AMQP_PORT already up"
    return 0
  fi
  [ -x "$RMQ_BIN/rabbitmq-server" ] \
    || die "rabbitmq-server is not installed (run scripts/services.sh)"
  if port_taken "$AMQP_PORT"; then
    die "port 127.0.0.1:$AMQP_PORT is taken by something that does not speak AMQP; free it"
  fi
  write_config
  rmq_env
  if node_running; then
    # The VM is up but the app is stopped (e.g. after stop_app): start it.
    ctl start_app >/dev/null
  else
    if port_taken "$DIST_PORT"; then
      die "Erlang distribution port 127.0.0.1:$DIST_PORT is taken by another process; free it"
    fi
    (cd "$BASE" && "$RMQ_BIN/rabbitmq-server" -detached </dev/null >>"$BASE/log/startup.log" 2>&1) \
      || die "rabbitmq-server -detached failed; see $BASE/log/"
  fi
  if ! wait_amqp 120; then
    die "RabbitMQ did not answer on 127.0.0.1:$AMQP_PORT within 120 s; see $BASE/log/"
  fi
  log "127.0.0.1:$AMQP_PORT started, node $NODE (data and logs in $BASE)"
}

stop() {
  write_config
  rmq_env
  if node_running; then
    ctl stop >/dev/null
    log "node $NODE stopped"
  else
    log "node $NODE is not running"
  fi
  local deadline=$((SECONDS + 30))
  while port_taken "$AMQP_PORT" && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
}

restart_app() {
  write_config
  rmq_env
  node_running || { start; return; }
  ctl stop_app >/dev/null
  ctl start_app >/dev/null
  wait_amqp 120 || die "RabbitMQ did not answer after start_app; see $BASE/log/"
  log "app restarted on 127.0.0.1:$AMQP_PORT"
}

cmd="${1:-start}"
[ $# -gt 0 ] && shift
case "$cmd" in
  start) start ;;
  stop) stop ;;
  restart) restart_app ;;
  restart-node) stop; start ;;
  status) if amqp_up; then log "answers AMQP on 127.0.0.1:$AMQP_PORT"; else log "down"; exit 1; fi ;;
  ctl) write_config; ctl "$@" ;;
  *) die "usage: $0 start|stop|restart|restart-node|status|ctl <args>" ;;
esac
