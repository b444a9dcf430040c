#!/usr/bin/env bash
# Local stack for order-pipeline: Redis (AOF on), PostgreSQL and a 3-node
# RabbitMQ cluster on loopback, with all data under .stack/ (git-ignored), plus
# the services (order-history as two replicas, three suppliers).
#
#   scripts/stack.sh deps       install if missing, start Redis + PostgreSQL + RabbitMQ cluster
#   scripts/stack.sh up         deps, then build (release) and start the services
#   scripts/stack.sh down       stop what this script started, by pid
#   scripts/stack.sh status     show what is running
#   scripts/stack.sh start-node N / stop-node N   one RabbitMQ node (fault tests)
#   scripts/stack.sh start-supplier ID / stop-supplier ID   one supplier (acme,
#                               globex, initech): watch its circuit open and recover
#   scripts/stack.sh start-pg / stop-pg / restart-pg   PostgreSQL (fault tests;
#                               stop-pg is a fast shutdown; data and port are kept)
#   scripts/stack.sh database-url   the local PostgreSQL's DATABASE_URL
#
# Idempotent: anything already running from .stack/ is left as it is. A port held
# by a process this script did not start is an error that names the holder.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STACK="${STACK_DIR:-$ROOT/.stack}"
REDIS_PORT="${STACK_REDIS_PORT:-6379}"
AMQP_BASE_PORT="${STACK_AMQP_BASE_PORT:-5672}"
DIST_BASE_PORT="${STACK_DIST_BASE_PORT:-25672}"
PG_PORT="${STACK_PG_PORT:-5433}"
PG_HOME="$STACK/postgres"
PGDATA_DIR="$PG_HOME/data"
NODES=3
RMQ_HOME="$STACK/rabbitmq"
RMQ_BIN=/usr/lib/rabbitmq/bin

say() { printf '\033[1m==>\033[0m %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

amqp_port() { echo $((AMQP_BASE_PORT + $1 - 1)); }
dist_port() { echo $((DIST_BASE_PORT + $1 - 1)); }
node_name() { echo "rabbit$1@localhost"; }

amqp_urls() {
  local urls=() i
  for i in $(seq 1 $NODES); do urls+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$i")/%2f"); done
  (IFS=,; echo "${urls[*]}")
}

# Dev-only credential, like RabbitMQ's guest/guest: the server listens on
# 127.0.0.1 only. docker-compose.yml takes its password from the environment.
PG_USER=order_pipeline
PG_PASSWORD=order_pipeline
PG_DB=order_pipeline
database_url() { echo "postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"; }

# order-history runs as two replicas; every service is told where they are.
HISTORY_ADDRS=(127.0.0.1:8095 127.0.0.1:8096)
history_urls() {
  local urls=() a
  for a in "${HISTORY_ADDRS[@]}"; do urls+=("http://$a"); done
  (IFS=,; echo "${urls[*]}")
}

# Three suppliers answer the gateway's quote requests (the gateway is told
# their ids as QUOTE_SUPPLIERS); supplier-<id> runs target/release/supplier.
SUPPLIER_IDS=(acme globex initech)
SUPPLIER_ADDRS=(127.0.0.1:8101 127.0.0.1:8102 127.0.0.1:8103)
supplier_addr() {
  local i
  for i in "${!SUPPLIER_IDS[@]}"; do
    [ "${SUPPLIER_IDS[i]}" = "$1" ] && { echo "${SUPPLIER_ADDRS[i]}"; return 0; }
  done
  die "no supplier '$1' (one of: ${SUPPLIER_IDS[*]})"
}
supplier_urls() {
  local i
  for i in "${!SUPPLIER_IDS[@]}"; do printf 'http://%s (%s)  ' "${SUPPLIER_ADDRS[i]}" "${SUPPLIER_IDS[i]}"; done | sed 's/ *$//'
}

# --- helpers ---------------------------------------------------------------

pid_alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
read_pid() { [ -f "$1" ] && tr -dc '0-9' <"$1" || true; }

# Fails if $1 is listened on by a process other than pid $2 (or its children).
port_free_or_ours() {
  local port=$1 ours=${2:-} holder
  holder=$(ss -Hltnp "sport = :$port" 2>/dev/null | grep -o 'pid=[0-9]*' | head -n1 | cut -d= -f2 || true)
  [ -z "$holder" ] && return 0
  if [ -n "$ours" ] && { [ "$holder" = "$ours" ] || ps -o ppid= -p "$holder" | grep -qw "$ours"; }; then
    return 0
  fi
  die "port $port is held by another process (pid $holder: $(ps -o args= -p "$holder" | cut -c1-80)); stop it first"
}

wait_until() {
  local what=$1 tries=$2; shift 2
  for _ in $(seq 1 "$tries"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.5; done
  die "$what did not come up; see the logs under $STACK"
}

install_packages() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  [ -x "$RMQ_BIN/rabbitmq-server" ] || missing+=(rabbitmq-server)
  pg_bindir >/dev/null || missing+=(postgresql)
  # The dashboard's tests: promtool checks its Prometheus output, headless
  # Chromium renders its live page.
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v chromium >/dev/null || missing+=(chromium)
  command -v chromedriver >/dev/null || missing+=(chromium-driver)
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing ${missing[*]} from the distribution's packages"
  [ "$(id -u)" = 0 ] || die "installing ${missing[*]} needs root (or install them yourself)"
  export DEBIAN_FRONTEND=noninteractive
  # The packages' own service units must not grab the default ports we use.
  printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d.order-pipeline
  [ -e /usr/sbin/policy-rc.d ] || { cp /usr/sbin/policy-rc.d.order-pipeline /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; local placed=1; }
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -n "${placed:-}" ] && rm -f /usr/sbin/policy-rc.d
  rm -f /usr/sbin/policy-rc.d.order-pipeline
}

# --- Redis -----------------------------------------------------------------

redis_up() {
  local dir="$STACK/redis" pid
  mkdir -p "$dir"
  pid=$(read_pid "$dir/redis.pid")
  if pid_alive "$pid"; then say "redis already running (pid $pid)"; return 0; fi
  port_free_or_ours "$REDIS_PORT"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --dir "$dir" \
    --appendonly yes --appendfsync everysec \
    --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
  wait_until "redis on port $REDIS_PORT" 40 redis-cli -p "$REDIS_PORT" ping
  say "redis up on 127.0.0.1:$REDIS_PORT (pid $(read_pid "$dir/redis.pid"), AOF on)"
}

# --- PostgreSQL ------------------------------------------------------------

# The server's bin directory: the version the data directory was made with if
# there is one, else 15 (Debian 12's), else any installed version.
pg_bindir() {
  local d want=15
  [ -f "$PGDATA_DIR/PG_VERSION" ] && want=$(cat "$PGDATA_DIR/PG_VERSION")
  for d in "/usr/lib/postgresql/$want/bin" /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return 0; }
  done
  return 1
}

# initdb and the server refuse to run as root: as root they run as postgres
# (from $PG_HOME, a directory it can read).
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    (cd "$PG_HOME" && runuser -u postgres -- "$@")
  else
    (cd "$PG_HOME" && "$@")
  fi
}

pg_pid() { if [ -f "$PGDATA_DIR/postmaster.pid" ]; then head -n1 "$PGDATA_DIR/postmaster.pid" | tr -dc '0-9'; fi; }

# Neither is a stale postmaster.pid whose number now belongs to another
# process, nor a killed server its parent has yet to reap (a zombie).
pg_running() {
  local pid
  pid=$(pg_pid)
  pid_alive "$pid" && [ "$(ps -o comm= -p "$pid" 2>/dev/null)" = postgres ] \
    && ! ps -o stat= -p "$pid" 2>/dev/null | grep -q '^Z'
}

# As root, the data belongs to the postgres user, which must reach $PG_HOME
# through every parent directory (a checkout under a home directory of mode
# 750, say): only the parents it cannot search are given o+x.
pg_prepare_dirs() {
  mkdir -p "$PG_HOME"
  [ "$(id -u)" = 0 ] || return 0
  chown postgres: "$PG_HOME"
  chmod 700 "$PG_HOME"
  local d=$PG_HOME parents=() i
  while [ "$d" != / ]; do d=$(dirname "$d"); parents+=("$d"); done
  for ((i = ${#parents[@]} - 1; i >= 0; i--)); do
    if ! runuser -u postgres -- test -x "${parents[i]}"; then
      chmod o+x "${parents[i]}"
      say "made ${parents[i]} searchable by others (o+x) so that postgres reaches $PG_HOME"
    fi
  done
  runuser -u postgres -- test -w "$PG_HOME" || die "the postgres user cannot write to $PG_HOME"
}

# Our settings, rewritten before every start (so STACK_PG_PORT changes apply),
# included from postgresql.conf.
pg_configure() {
  as_pg tee "$PGDATA_DIR/order-pipeline.conf" >/dev/null <<EOF
# Written by scripts/stack.sh before every start; edits are lost.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$PG_HOME'
# The tests open many pools at once.
max_connections = 200
EOF
  grep -qx "include_if_exists = 'order-pipeline.conf'" "$PGDATA_DIR/postgresql.conf" \
    || echo "include_if_exists = 'order-pipeline.conf'" | as_pg tee -a "$PGDATA_DIR/postgresql.conf" >/dev/null
}

# As the cluster's superuser, over the Unix socket (peer authentication).
pg_psql() { as_pg "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_HOME" -p "$PG_PORT" -d postgres; }

pg_up() {
  PG_BIN=$(pg_bindir) || die "PostgreSQL is not installed (no /usr/lib/postgresql/*/bin/initdb)"
  # The socket's path must fit in sun_path (107 bytes).
  [ ${#PG_HOME} -le 90 ] || die "$PG_HOME is too long a path for PostgreSQL's Unix socket; set STACK_DIR"
  pg_prepare_dirs
  if [ ! -f "$PGDATA_DIR/PG_VERSION" ]; then
    say "initialising a PostgreSQL cluster in $PGDATA_DIR"
    as_pg "$PG_BIN/initdb" -D "$PGDATA_DIR" --encoding=UTF8 --locale=C \
      --auth-local=peer --auth-host=scram-sha-256 >"$PG_HOME/initdb.log" 2>&1 \
      || die "initdb failed; see $PG_HOME/initdb.log"
  fi
  if pg_running; then
    say "postgres already running (pid $(pg_pid))"
  else
    # A killed server's pid stays taken until its parent reaps it, and the
    # server refuses to start while the pid in postmaster.pid is taken.
    local old
    old=$(pg_pid)
    for _ in $(seq 1 60); do
      if ! pid_alive "$old" || [ "$(ps -o comm= -p "$old" 2>/dev/null)" != postgres ]; then break; fi
      sleep 0.5
    done
    port_free_or_ours "$PG_PORT"
    pg_configure
    # setsid: a signal to the caller's process group must not reach the server.
    as_pg setsid -w "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$PG_HOME/postgres.log" -w -t 120 start >/dev/null \
      || die "postgres did not start; see $PG_HOME/postgres.log"
  fi
  wait_until "postgres on port $PG_PORT" 120 "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"
  # The role and its database, once; the password is (re)set every time.
  pg_psql >/dev/null <<EOF
SELECT format('CREATE ROLE %I LOGIN', '$PG_USER')
  WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_USER')
\gexec
-- The tests need no CREATEDB: they share this one database, each in a
-- throwaway schema of its own (CREATE SCHEMA, which the database's owner may).
-- CREATEDB only lets a developer make a scratch database by hand.
ALTER ROLE $PG_USER WITH LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
SELECT format('CREATE DATABASE %I OWNER %I', '$PG_DB', '$PG_USER')
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_DB')
\gexec
EOF
  say "postgres up on 127.0.0.1:$PG_PORT (DATABASE_URL=$(redact "$(database_url)"))"
}

pg_down() {
  pg_running || return 0
  local pid bin
  pid=$(pg_pid)
  bin=$(pg_bindir) || die "postgres is running (pid $pid) but pg_ctl is not installed"
  as_pg "$bin/pg_ctl" -D "$PGDATA_DIR" -m fast -w -t 120 stop >/dev/null \
    || die "postgres (pid $pid) did not stop; see $PG_HOME/postgres.log"
  say "stopped postgres (pid $pid)"
}

# --- RabbitMQ cluster ------------------------------------------------------

# Three Erlang VMs share this machine with Redis and the services: their
# schedulers must not busy-wait for work (+sbwt none ...), or they burn the
# CPU the rest of the pipeline needs (see docs/performance.md).
# RABBITMQ_SCHEDULER_BIND_TYPE (RabbitMQ's default: db, every node binds its
# schedulers to the same cores) and RABBITMQ_ERL_ARGS (extra emulator flags,
# e.g. "+S 1:1") are passed on for A/B runs; the bench records what the nodes
# ran with.
RMQ_BIND_TYPE=${RABBITMQ_SCHEDULER_BIND_TYPE:-db}
RMQ_EXTRA_ERL_ARGS=${RABBITMQ_ERL_ARGS:-}
rmq_env() {
  local i=$1 dir="$RMQ_HOME/rabbit$1"
  echo HOME="$RMQ_HOME" \
    RABBITMQ_NODENAME="$(node_name "$i")" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$(amqp_port "$i")" \
    RABBITMQ_DIST_PORT="$(dist_port "$i")" \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" \
    RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_PID_FILE="$dir/pid" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_SCHEDULER_BIND_TYPE="$RMQ_BIND_TYPE" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="'-kernel inet_dist_use_interface {127,0,0,1} +sbwt none +sbwtdcpu none +sbwtdio none $RMQ_EXTRA_ERL_ARGS'"
}

as_rabbitmq() { runuser -u rabbitmq -- env "$@"; }

rmqctl() {
  local i=$1; shift
  # shellcheck disable=SC2046
  eval as_rabbitmq $(rmq_env "$i") "$RMQ_BIN/rabbitmqctl" -n "$(node_name "$i")" "$@"
}

rmq_prepare() {
  mkdir -p "$RMQ_HOME"
  if [ ! -f "$RMQ_HOME/.erlang.cookie" ]; then
    head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$RMQ_HOME/.erlang.cookie"
  fi
  local i dir
  for i in $(seq 1 $NODES); do
    dir="$RMQ_HOME/rabbit$i"
    mkdir -p "$dir/mnesia" "$dir/log"
    echo '[].' >"$dir/enabled_plugins"
    cat >"$dir/rabbitmq.conf" <<EOF
listeners.tcp.default = 127.0.0.1:$(amqp_port "$i")
loopback_users.guest = true
disk_free_limit.absolute = 50MB
log.console = false
log.file.level = warning
EOF
  done
  chown -R rabbitmq: "$RMQ_HOME"
  chmod 400 "$RMQ_HOME/.erlang.cookie"
}

node_pid() { read_pid "$RMQ_HOME/rabbit$1/pid"; }

node_start() {
  local i=$1 pid
  pid=$(node_pid "$i")
  if pid_alive "$pid"; then return 0; fi
  port_free_or_ours "$(amqp_port "$i")"
  port_free_or_ours "$(dist_port "$i")"
  rm -f "$RMQ_HOME/rabbit$i/pid"
  # Every quorum queue and stream keeps files open on every node; at the
  # usual 1024 descriptors a node stops completing handshakes once a test
  # run has declared a few hundred queues.
  # runuser resets the soft limit to 1024, so prlimit sets it again inside.
  local nofile
  ulimit -Hn 65536 2>/dev/null || true
  nofile=$(ulimit -Hn)
  # shellcheck disable=SC2046
  eval setsid runuser -u rabbitmq -- prlimit --nofile="$nofile:$nofile" env $(rmq_env "$i") "$RMQ_BIN/rabbitmq-server" \
    '>>"$RMQ_HOME/rabbit$i/log/stdout.log"' '2>&1' '</dev/null' '&'
}

node_await() {
  local i=$1
  wait_until "rabbitmq node $(node_name "$i")" 240 rmqctl "$i" await_startup --timeout 5
}

node_stop() {
  local i=$1 pid
  pid=$(node_pid "$i")
  pid_alive "$pid" || return 0
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 120); do pid_alive "$pid" || break; sleep 0.5; done
  pid_alive "$pid" && kill -9 "$pid" 2>/dev/null || true
  rm -f "$RMQ_HOME/rabbit$i/pid"
}

rabbit_up() {
  rmq_prepare
  local i
  for i in $(seq 1 $NODES); do node_start "$i"; done
  for i in $(seq 1 $NODES); do node_await "$i"; done
  # Join nodes 2..N to node 1 unless they already are members.
  local running
  running=$(rmqctl 1 cluster_status --formatter json 2>/dev/null || true)
  for i in $(seq 2 $NODES); do
    if ! grep -q "\"$(node_name "$i")\"" <<<"$running"; then
      say "joining $(node_name "$i") to the cluster"
      rmqctl "$i" stop_app >/dev/null 2>&1 || die "stop_app on $(node_name "$i") failed"
      rmqctl "$i" reset >/dev/null 2>&1 || die "reset of $(node_name "$i") failed"
      rmqctl "$i" join_cluster "$(node_name 1)" >/dev/null 2>&1 || die "$(node_name "$i") could not join $(node_name 1)"
      rmqctl "$i" start_app >/dev/null 2>&1 || die "start_app on $(node_name "$i") failed"
    fi
  done
  # Quorum queues need every member running before they are placed on it.
  wait_until "a $NODES-node cluster" 120 cluster_complete
  say "rabbitmq cluster up: $(redact "$(amqp_urls)")"
}

cluster_complete() {
  local n
  n=$(rmqctl 1 cluster_status --formatter json | grep -o '"running_nodes":\[[^]]*\]' | grep -o 'rabbit[0-9]*@' | wc -l)
  [ "$n" -eq "$NODES" ]
}

rabbit_down() {
  local i
  # Stop in reverse order so node 1, the seed, is the last to leave.
  for i in $(seq $NODES -1 1); do node_stop "$i"; done
}

# --- services --------------------------------------------------------------

SERVICES=(api-gateway order-processor notifier dashboard)

# Every process this script runs: the services, then the order-history
# replicas (order-history-N runs target/release/order-history), then the
# suppliers (supplier-<id>).
instances() {
  local i id
  echo "${SERVICES[@]}"
  for i in $(seq 1 ${#HISTORY_ADDRS[@]}); do echo "order-history-$i"; done
  for id in "${SUPPLIER_IDS[@]}"; do echo "supplier-$id"; done
}

# URLs with their passwords masked, for what this script prints.
redact() { sed -E 's#(://[^:/@,]*):[^@,]*@#\1:***@#g' <<<"$1"; }

# The client keys of the local stack, minted once into .stack (mode 0600):
# api-key (client demo: orders and quotes), admin-key (admin, the operator's)
# and internal-key (admin, what the services send each other: the history's
# API, the gateway's /suppliers). Only their hashes are in PostgreSQL; these
# files are the only copies.
keys_up() {
  local gateway="$ROOT/target/release/api-gateway"
  (
    umask 077
    if [ ! -s "$STACK/api-key" ]; then
      "$gateway" keys create --client demo --scope orders:write --scope orders:read \
        --scope quotes:read >"$STACK/api-key.new" && mv "$STACK/api-key.new" "$STACK/api-key"
    fi
    if [ ! -s "$STACK/admin-key" ]; then
      "$gateway" keys create --client operator --scope admin \
        >"$STACK/admin-key.new" && mv "$STACK/admin-key.new" "$STACK/admin-key"
    fi
    if [ ! -s "$STACK/internal-key" ]; then
      "$gateway" keys create --client internal --scope admin \
        >"$STACK/internal-key.new" && mv "$STACK/internal-key.new" "$STACK/internal-key"
    fi
  ) || die "cannot mint the client keys (is PostgreSQL up? see DATABASE_URL)"
  chmod 600 "$STACK/api-key" "$STACK/admin-key" "$STACK/internal-key"
}

# What every service is told, unless the caller's environment says otherwise.
services_env() {
  export RABBITMQ_URLS="${RABBITMQ_URLS:-$(amqp_urls)}" REDIS_URL="${REDIS_URL:-redis://127.0.0.1:$REDIS_PORT}" \
    DATABASE_URL="${DATABASE_URL:-$(database_url)}" HISTORY_URLS="${HISTORY_URLS:-$(history_urls)}" \
    QUOTE_SUPPLIERS="${QUOTE_SUPPLIERS-$(IFS=,; echo "${SUPPLIER_IDS[*]}")}" \
    GATEWAY_URL="${GATEWAY_URL:-http://${GATEWAY_ADDR:-127.0.0.1:8080}}"
  # The services' internal key: the history's API, and the dashboard's
  # view of the gateway's /suppliers.
  if [ -s "$STACK/internal-key" ]; then
    if [ -z "${GATEWAY_API_KEY:-}" ]; then
      GATEWAY_API_KEY=$(cat "$STACK/internal-key")
      export GATEWAY_API_KEY
    fi
    if [ -z "${HISTORY_API_KEY:-}" ]; then
      HISTORY_API_KEY=$(cat "$STACK/internal-key")
      export HISTORY_API_KEY
    fi
  fi
}

# Starts supplier $1 unless it is running; the demo catalog is written only
# where catalog:<id> is absent, so an edited catalog survives a restart.
supplier_start() {
  local id=$1 addr svc="supplier-$1" pid
  addr=$(supplier_addr "$id")
  pid=$(read_pid "$STACK/services/$svc.pid")
  if pid_alive "$pid"; then return 0; fi
  SUPPLIER_ID="$id" SUPPLIER_ADDR="$addr" SUPPLIER_DEMO_CATALOG=1 \
    setsid "$ROOT/target/release/supplier" >>"$STACK/services/$svc.log" 2>&1 </dev/null &
  echo $! >"$STACK/services/$svc.pid"
}

supplier_await() {
  wait_until "supplier-$1" 120 curl -fsS "http://$(supplier_addr "$1")/health"
}

services_up() {
  say "building the services (release)"
  (cd "$ROOT" && cargo build --release --quiet --bins)
  local bin
  for bin in order-history supplier; do
    [ -x "$ROOT/target/release/$bin" ] || die "no $ROOT/target/release/$bin after the build"
  done
  mkdir -p "$STACK/services"
  DATABASE_URL="${DATABASE_URL:-$(database_url)}" keys_up
  services_env
  local svc pid i id
  for svc in "${SERVICES[@]}"; do
    pid=$(read_pid "$STACK/services/$svc.pid")
    if pid_alive "$pid"; then continue; fi
    setsid "$ROOT/target/release/$svc" >>"$STACK/services/$svc.log" 2>&1 </dev/null &
    echo $! >"$STACK/services/$svc.pid"
  done
  for i in $(seq 1 ${#HISTORY_ADDRS[@]}); do
    svc="order-history-$i"
    pid=$(read_pid "$STACK/services/$svc.pid")
    if pid_alive "$pid"; then continue; fi
    HISTORY_ADDR="${HISTORY_ADDRS[i - 1]}" HISTORY_REPLICA="history-$i" \
      setsid "$ROOT/target/release/order-history" >>"$STACK/services/$svc.log" 2>&1 </dev/null &
    echo $! >"$STACK/services/$svc.pid"
  done
  for id in "${SUPPLIER_IDS[@]}"; do supplier_start "$id"; done
  wait_until "api-gateway" 120 curl -fsS "http://${GATEWAY_ADDR:-127.0.0.1:8080}/health"
  wait_until "dashboard" 60 curl -fsS "http://${DASHBOARD_ADDR:-127.0.0.1:8090}/health"
  # Any HTTP answer will do: a standby replica answers too.
  for i in $(seq 1 ${#HISTORY_ADDRS[@]}); do
    wait_until "order-history-$i" 120 curl -sS -o /dev/null "http://${HISTORY_ADDRS[i - 1]}/health"
  done
  for id in "${SUPPLIER_IDS[@]}"; do supplier_await "$id"; done
  for svc in $(instances); do
    pid_alive "$(read_pid "$STACK/services/$svc.pid")" || die "$svc exited; see $STACK/services/$svc.log"
  done
  cat <<EOF

  api-gateway      http://${GATEWAY_ADDR:-127.0.0.1:8080}      (POST /orders, GET /orders/<id>, GET /quotes/<sku>, GET /suppliers)
  dashboard        http://${DASHBOARD_ADDR:-127.0.0.1:8090}
  order-processor  http://${PROCESSOR_ADDR:-127.0.0.1:9101}/health
  notifier         http://${NOTIFIER_ADDR:-127.0.0.1:9102}/health
  order-history    $(history_urls | sed 's/,/  /g')   (GET /orders, /orders/<id>, /stats)
  suppliers        $(supplier_urls)
  redis            redis://127.0.0.1:$REDIS_PORT
  postgres         $(redact "$DATABASE_URL")
  rabbitmq         $(redact "$(amqp_urls)")
  logs             $STACK/services/*.log

  Client keys (only copies; keep them secret):
    $STACK/api-key     client demo: orders:write, orders:read, quotes:read
    $STACK/admin-key   admin: /metrics, /suppliers, the history's API, the dashboard
                       (any user name, this key as the password)

  curl -H "Authorization: Bearer \$(cat .stack/api-key)" http://${GATEWAY_ADDR:-127.0.0.1:8080}/orders/order123
  More keys: target/release/api-gateway keys create --client NAME (list, revoke: keys --help)

EOF
}

# Stops one instance (a name from `instances`) by its pid file.
instance_stop() {
  local svc=$1 pid
  pid=$(read_pid "$STACK/services/$svc.pid")
  if pid_alive "$pid"; then
    kill "$pid"
    for _ in $(seq 1 40); do pid_alive "$pid" || break; sleep 0.25; done
    pid_alive "$pid" && kill -9 "$pid" || true
    say "stopped $svc (pid $pid)"
  fi
  rm -f "$STACK/services/$svc.pid"
}

services_down() {
  local svc
  for svc in $(instances); do instance_stop "$svc"; done
}

# start-supplier: one supplier back (the circuit-breaker walkthrough), from
# the binary `up` built; no build, so it takes seconds.
supplier_up() {
  local id=$1
  supplier_addr "$id" >/dev/null
  [ -x "$ROOT/target/release/supplier" ] || die "no $ROOT/target/release/supplier; run \`make up\` first"
  mkdir -p "$STACK/services"
  services_env
  supplier_start "$id"
  supplier_await "$id"
  pid_alive "$(read_pid "$STACK/services/supplier-$id.pid")" || die "supplier-$id exited; see $STACK/services/supplier-$id.log"
  say "supplier-$id up on http://$(supplier_addr "$id") (pid $(read_pid "$STACK/services/supplier-$id.pid"))"
}

redis_down() {
  local pid
  pid=$(read_pid "$STACK/redis/redis.pid")
  if pid_alive "$pid"; then
    kill "$pid"
    for _ in $(seq 1 40); do pid_alive "$pid" || break; sleep 0.25; done
    say "stopped redis (pid $pid)"
  fi
}

status() {
  local pid i svc
  pid=$(read_pid "$STACK/redis/redis.pid")
  pid_alive "$pid" && echo "redis            running (pid $pid)" || echo "redis            stopped"
  pg_running && echo "postgres         running (pid $(pg_pid), port $PG_PORT)" || echo "postgres         stopped"
  for i in $(seq 1 $NODES); do
    pid=$(node_pid "$i")
    pid_alive "$pid" && echo "$(node_name "$i")  running (pid $pid, port $(amqp_port "$i"))" \
      || echo "$(node_name "$i")  stopped"
  done
  for svc in $(instances); do
    pid=$(read_pid "$STACK/services/$svc.pid")
    pid_alive "$pid" && printf '%-16s running (pid %s)\n' "$svc" "$pid" || printf '%-16s stopped\n' "$svc"
  done
}

case "${1:-}" in
  deps) install_packages; redis_up; pg_up; rabbit_up ;;
  up) install_packages; redis_up; pg_up; rabbit_up; services_up ;;
  down) services_down; rabbit_down; pg_down; redis_down; say "stack stopped" ;;
  status) status ;;
  urls) amqp_urls ;;
  database-url) database_url ;;
  start-node) rmq_prepare; node_start "$2"; node_await "$2"; wait_until "a $NODES-node cluster" 120 cluster_complete ;;
  stop-node) node_stop "$2" ;;
  start-pg) pg_up ;;
  stop-pg) pg_down ;;
  restart-pg) pg_down; pg_up ;;
  start-supplier) supplier_up "${2:-}" ;;
  stop-supplier) supplier_addr "${2:-}" >/dev/null; instance_stop "supplier-$2" ;;
  *) die "usage: $0 deps|up|down|status|urls|database-url|start-node N|stop-node N|start-pg|stop-pg|restart-pg|start-supplier ID|stop-supplier ID" ;;
esac
