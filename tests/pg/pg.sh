#!/usr/bin/env bash
# Start or stop a throw-away PostgreSQL server on 127.0.0.1 for the tests.
#
#   tests/pg/pg.sh start STATE_DIR   initdb a cluster in STATE_DIR, start it on a free port,
#                                    create database telerad_test, write its URL to STATE_DIR/url
#   tests/pg/pg.sh newdb STATE_DIR   create a fresh database and print its URL: tests that run
#                                    in parallel each take their own, so that no test's data
#                                    (or reconciliation) meets another's
#   tests/pg/pg.sh stop STATE_DIR    stop it and remove STATE_DIR
#
# PostgreSQL refuses to run as root: as root the server runs as the postgres user.
set -euo pipefail
cmd=${1:?start or stop}
state=${2:?state directory}

bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [[ -z "$bin" ]]; then
    echo "pg.sh: PostgreSQL is not installed (apt-get install postgresql)" >&2
    exit 77
fi
as_owner() {
    if [[ $(id -u) -eq 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "$cmd" in
start)
    rm -rf "$state"
    mkdir -p "$state"
    [[ $(id -u) -eq 0 ]] && chown postgres "$state"
    port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    as_owner "$bin/initdb" -D "$state/data" -A trust -U postgres --no-sync >"$state/initdb.log" 2>&1 ||
        { cat "$state/initdb.log" >&2; exit 1; }
    as_owner "$bin/pg_ctl" -D "$state/data" -l "$state/server.log" -w \
        -o "-p $port -k $state -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null ||
        { cat "$state/server.log" >&2; exit 1; }
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres telerad_test
    echo "postgresql://postgres@127.0.0.1:$port/telerad_test" >"$state/url"
    echo "PostgreSQL on 127.0.0.1:$port ($state)"
    ;;
newdb)
    base=$(cat "$state/url")
    name="t_$$_${RANDOM}${RANDOM}"
    psql "$base" -q -X -c "CREATE DATABASE $name" >/dev/null
    echo "${base%/*}/$name"
    ;;
stop)
    if [[ -d "$state/data" ]]; then
        as_owner "$bin/pg_ctl" -D "$state/data" -m immediate stop >/dev/null 2>&1 || true
    fi
    rm -rf "$state"
    ;;
*)
    echo "usage: pg.sh start|newdb|stop STATE_DIR" >&2
    exit 2
    ;;
esac
