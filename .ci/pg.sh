#!/usr/bin/env bash
# Start a throw-away PostgreSQL on loopback and print its URL on the last line.
# Usage: source .ci/pg.sh  (sets PG_DATA, PG_PORT, ACCESS_LEDGER_TEST_PG; pg_stop stops it)
set -euo pipefail
PG_BIN=""
for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && PG_BIN="$d"; done
if [ -z "$PG_BIN" ]; then
  echo "installing PostgreSQL with apt-get" >&2
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) >&2
  for d in /usr/lib/postgresql/*/bin; do [ -x "$d/initdb" ] && PG_BIN="$d"; done
fi
PG_PORT="${PG_PORT:-54329}"
PG_DATA="$(mktemp -d /tmp/access-ledger-pg.XXXXXX)"
RUN_AS=()
if [ "$(id -u)" = "0" ]; then
  id postgres >/dev/null 2>&1 || useradd --system --no-create-home postgres
  chown postgres "$PG_DATA"
  RUN_AS=(runuser -u postgres --)
fi
"${RUN_AS[@]}" "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust -E UTF8 >/dev/null
"${RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -l "$PG_DATA/server.log" -w \
  -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DATA -c fsync=off -c max_connections=200" start >/dev/null
export PG_DATA PG_PORT PG_BIN
export ACCESS_LEDGER_TEST_PG="postgresql://postgres@127.0.0.1:$PG_PORT/postgres"
pg_stop() { "${RUN_AS[@]}" "$PG_BIN/pg_ctl" -D "$PG_DATA" -m fast stop >/dev/null 2>&1 || true; rm -rf "$PG_DATA"; }
echo "$ACCESS_LEDGER_TEST_PG"
