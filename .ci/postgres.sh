#!/usr/bin/env bash
# A throwaway PostgreSQL server for the store tests (docs/store.md, "Tests").
#
#   eval "$(bash .ci/postgres.sh start)"   # prints the exports: OVERREAD_TEST_PG_DSN, OVERREAD_TEST_PG_DIR
#   bash .ci/postgres.sh stop "$OVERREAD_TEST_PG_DIR"
#
# start: a new temporary data directory, initdb and pg_ctl run as an unprivileged user
# (PostgreSQL refuses to run as root: as root, the `postgres` user, else `nobody`), the
# server listens on no TCP port, only on a unix socket inside that directory, and trusts
# local connections (nothing else can reach it). The binaries come from Debian's
# `postgresql` package (/usr/lib/postgresql/<version>/bin), or PG_BIN.
# stop: stops that server and deletes the directory.
set -euo pipefail

find_bin() {
    if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
    local dir
    dir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [ -n "$dir" ] && [ -x "$dir/initdb" ]; then echo "$dir"; return; fi
    if command -v initdb >/dev/null 2>&1; then dirname "$(command -v initdb)"; return; fi
    echo "postgres.sh: no initdb found (apt-get install postgresql, or set PG_BIN)" >&2
    exit 1
}

as_owner() {
    # Runs "$@" as the data directory's owner.
    if [ "$(id -u)" = 0 ]; then
        runuser -u "$owner" -- "$@"
    else
        "$@"
    fi
}

pick_owner() {
    if [ "$(id -u)" != 0 ]; then id -un; return; fi
    if id -u postgres >/dev/null 2>&1; then echo postgres; else echo nobody; fi
}

start() {
    local bin dir
    bin=$(find_bin)
    owner=$(pick_owner)
    # A tmpfs with room (initdb writes about 40 MB) makes creating each test's tables
    # several times faster; the data is thrown away anyway.
    local root=${PG_TEST_ROOT:-${TMPDIR:-/tmp}}
    if [ -z "${PG_TEST_ROOT:-}" ] && [ -w /dev/shm ] \
        && [ "$(df -Pk /dev/shm | awk 'NR == 2 { print $4 }')" -gt 1048576 ]; then
        root=/dev/shm
    fi
    dir=$(mktemp -d "$root/overread-pg.XXXXXX")
    chmod 0700 "$dir"
    if [ "$(id -u)" = 0 ]; then chown "$owner" "$dir"; fi
    as_owner "$bin/initdb" --pgdata="$dir/data" --username=overread --auth=trust --encoding=UTF8 \
        --locale=C --no-instructions >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    # Members of overread_password_login must give a password (the password tests), everyone else
    # is trusted: the socket is the only way in.
    as_owner sed -i '1i local all +overread_password_login scram-sha-256' "$dir/data/pg_hba.conf"
    # No TCP listener; the socket lives in the directory (mode 0700: only its owner and root reach it).
    as_owner "$bin/pg_ctl" --pgdata="$dir/data" --log="$dir/server.log" --wait --timeout=60 \
        -o "-c listen_addresses= -c unix_socket_directories=$dir -c max_connections=200" start >/dev/null \
        || { cat "$dir/server.log" >&2; exit 1; }
    "$bin/createuser" --host="$dir" --username=overread --no-login overread_password_login
    echo "export OVERREAD_TEST_PG_DIR=$dir"
    echo "export OVERREAD_TEST_PG_DSN='postgresql://overread@/postgres?host=$dir'"
}

stop() {
    local dir=${1:?usage: postgres.sh stop DIR}
    local bin
    bin=$(find_bin)
    case "$dir" in
        */overread-pg.*) ;;
        *) echo "postgres.sh: $dir is not a directory this script made" >&2; exit 1 ;;
    esac
    owner=$(stat -c %U "$dir")
    if [ -f "$dir/data/postmaster.pid" ]; then
        as_owner "$bin/pg_ctl" --pgdata="$dir/data" --mode=fast --wait stop >/dev/null || true
    fi
    rm -rf "$dir"
}

case "${1:-}" in
    start) start ;;
    stop) stop "${2:-}" ;;
    *) echo "usage: postgres.sh start | stop DIR" >&2; exit 2 ;;
esac
