#!/bin/bash
# PostgreSQL's entrypoint, compatible with the official image's variables:
#   POSTGRES_PASSWORD (required on first start), POSTGRES_USER (default postgres),
#   POSTGRES_DB (default: POSTGRES_USER), PGDATA (default /var/lib/postgresql/data).
# On first start (no PG_VERSION in PGDATA) it runs initdb with POSTGRES_USER as the superuser and
# scram-sha-256 for TCP connections, then creates POSTGRES_DB. Then it execs the command as the
# postgres user; `postgres -c ...` arguments go to the server, as with the official image.
set -euo pipefail

case "${1:--}" in
    -*) set -- postgres "$@" ;;  # only server options: run the server with them
esac

if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown -R postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$0" "$@"
fi

if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    user="${POSTGRES_USER:-postgres}"
    db="${POSTGRES_DB:-$user}"
    if [ -z "${POSTGRES_PASSWORD:-}" ]; then
        echo "mao-postgres: POSTGRES_PASSWORD is empty; refusing to create a database nobody can log in to" >&2
        exit 1
    fi
    # The password goes through a pipe, never the command line (ps would show it).
    initdb --username="$user" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 \
        ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA" >/dev/null
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    if [ "$db" != postgres ]; then
        # A private server (no TCP, socket in a temporary folder) just to create the database.
        sock="$(mktemp -d)"
        pg_ctl -D "$PGDATA" -w -o "-c listen_addresses='' -c unix_socket_directories=$sock" start >/dev/null
        psql -v ON_ERROR_STOP=1 -h "$sock" -U "$user" -d postgres -v db="$db" -q <<'SQL'
CREATE DATABASE :"db";
SQL
        pg_ctl -D "$PGDATA" -w -m fast stop >/dev/null
        rmdir "$sock"
    fi
    echo "mao-postgres: initialised $PGDATA (user $user, database $db)"
fi
exec "$@"
