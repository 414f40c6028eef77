#!/usr/bin/env bash
# Installs (Debian packages, if missing) and starts every server the tests
# need, each on 127.0.0.1 only, on ports apart from the usual defaults so that
# servers someone else runs are left alone:
#   Redis            127.0.0.1:6390   no persistence, dir .tmp/redis-6390
#   Redis (restart)  127.0.0.1:6391   AOF; scripts/redis-6391.sh start|stop|restart
#   RabbitMQ         127.0.0.1:5673   node machinery-ts@localhost, dist 25673,
#                                     epmd on loopback; scripts/rabbitmq.sh
#   memcached        127.0.0.1:11213
#   fauxqs (SQS)     127.0.0.1:9325   scripts/fauxqs-server.mjs
# A server is found by asking its port, not by pid files, so another checkout's
# servers are reused. A port held by something that does not answer as the
# expected server is an error. Writes .tmp/services.env with the URLs.
# Safe to run again; a second run takes well under a second.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
TMP="$ROOT/.tmp"
export PATH="$PATH:/usr/sbin:/sbin"

REDIS_PORT=6390
REDIS_RESTART_PORT=6391
AMQP_PORT=5673
MEMCACHED_PORT=11213
SQS_PORT=9325

log() { printf 'services: %s\n' "$*"; }
die() { printf 'services: %s\n' "$*" >&2; exit 1; }
port_taken() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }
wait_for() { # wait_for SECONDS COMMAND...
  local deadline=$((SECONDS + $1)); shift
  until "$@"; do
    [ $SECONDS -ge $deadline ] && return 1
    sleep 0.1
  done
}

mkdir -p "$TMP"

# ------------------------------------------------------------------- install
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-cli >/dev/null || need+=(redis-tools)
[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || need+=(rabbitmq-server)
command -v memcached >/dev/null || need+=(memcached)
if [ "${#need[@]}" -gt 0 ]; then
  [ "$(id -u)" = 0 ] || die "missing ${need[*]}: install them (apt-get install ${need[*]}) or run as root"
  log "installing ${need[*]} (apt-get)"
  # Keep the packages' init scripts from starting the servers with their own
  # configuration (RabbitMQ's would listen on every interface): the servers are
  # started below, on loopback.
  made_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >"$TMP/apt.log" 2>&1 || { cat "$TMP/apt.log" >&2; die "apt-get update failed"; }
  apt-get install -y -qq --no-install-recommends "${need[@]}" >>"$TMP/apt.log" 2>&1 \
    || { tail -n 30 "$TMP/apt.log" >&2; die "apt-get install ${need[*]} failed"; }
  if [ "$made_policy" = 1 ]; then rm -f /usr/sbin/policy-rc.d; trap - EXIT; fi
fi

# --------------------------------------------------------------------- redis
redis_pong() { [ "$(timeout 3 redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]; }
if redis_pong "$REDIS_PORT"; then
  log "redis      127.0.0.1:$REDIS_PORT already up"
else
  port_taken "$REDIS_PORT" && ! wait_for 5 redis_pong "$REDIS_PORT" \
    && die "port 127.0.0.1:$REDIS_PORT is taken by something that is not a Redis answering PING; free it"
  if ! redis_pong "$REDIS_PORT"; then
    dir="$TMP/redis-$REDIS_PORT"
    mkdir -p "$dir"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
      --dir "$dir" --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" \
      --save '' --appendonly no </dev/null >/dev/null 2>&1 \
      || die "redis-server failed to start on $REDIS_PORT; see $dir/redis.log"
    wait_for 30 redis_pong "$REDIS_PORT" || die "redis on $REDIS_PORT did not answer; see $dir/redis.log"
    log "redis      127.0.0.1:$REDIS_PORT started (no persistence, $dir)"
  fi
fi
line=$(bash scripts/redis-6391.sh start)
log "redis      ${line#redis-$REDIS_RESTART_PORT: }"

# ------------------------------------------------------------------ rabbitmq
line=$(bash scripts/rabbitmq.sh start)
log "rabbitmq   ${line#rabbitmq: }"

# ----------------------------------------------------------------- memcached
memcached_up() {
  timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$MEMCACHED_PORT && printf 'version\r\n' >&3 && read -r line <&3 && [[ \$line == VERSION* ]]" 2>/dev/null
}
if memcached_up; then
  log "memcached  127.0.0.1:$MEMCACHED_PORT already up"
else
  port_taken "$MEMCACHED_PORT" \
    && die "port 127.0.0.1:$MEMCACHED_PORT is taken by something that does not answer as memcached; free it"
  user_args=()
  [ "$(id -u)" = 0 ] && user_args=(-u root)
  memcached -d "${user_args[@]}" -l 127.0.0.1 -p "$MEMCACHED_PORT" -U 0 -m 256 \
    -P "$TMP/memcached-$MEMCACHED_PORT.pid" </dev/null >/dev/null 2>&1 \
    || die "memcached failed to start on $MEMCACHED_PORT"
  wait_for 10 memcached_up || die "memcached on $MEMCACHED_PORT did not answer"
  log "memcached  127.0.0.1:$MEMCACHED_PORT started"
fi

# -------------------------------------------------------------- fauxqs (SQS)
# An SQS ListQueues call over plain HTTP; fauxqs answers 200 with JSON.
sqs_up() {
  local status
  status=$(timeout 3 bash -c "exec 3<>/dev/tcp/127.0.0.1/$SQS_PORT || exit 1
    printf 'POST / HTTP/1.1\r\nHost: 127.0.0.1:$SQS_PORT\r\nContent-Type: application/x-amz-json-1.0\r\nX-Amz-Target: AmazonSQS.ListQueues\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}' >&3
    head -n 1 <&3" 2>/dev/null) || return 1
  [[ $status == "HTTP/1.1 200"* ]]
}
if sqs_up; then
  log "fauxqs     127.0.0.1:$SQS_PORT already up"
else
  port_taken "$SQS_PORT" && ! wait_for 5 sqs_up \
    && die "port 127.0.0.1:$SQS_PORT is taken by something that does not answer as an SQS server; free it"
  if ! sqs_up; then
    # Started in its own session, with no tie to this shell's output.
    setsid nohup node scripts/fauxqs-server.mjs "$SQS_PORT" </dev/null >>"$TMP/fauxqs.log" 2>&1 &
    echo $! >"$TMP/fauxqs.pid"
    wait_for 30 sqs_up || die "fauxqs did not answer on $SQS_PORT; see $TMP/fauxqs.log"
    log "fauxqs     127.0.0.1:$SQS_PORT started (pid $(cat "$TMP/fauxqs.pid"), log $TMP/fauxqs.log)"
  fi
fi

# ------------------------------------------------------------------- env file
cat >"$TMP/services.env" <<EOF
MTS_REDIS_URL=redis://127.0.0.1:$REDIS_PORT
MTS_REDIS_RESTART_URL=redis://127.0.0.1:$REDIS_RESTART_PORT
MTS_AMQP_URL=amqp://guest:guest@127.0.0.1:$AMQP_PORT/
MTS_MEMCACHE_URL=memcache://127.0.0.1:$MEMCACHED_PORT
MTS_SQS_ENDPOINT=http://127.0.0.1:$SQS_PORT
EOF
