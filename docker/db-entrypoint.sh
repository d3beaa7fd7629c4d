#!/bin/bash
# Entrypoint of the database image (docker/Containerfile.db). XACOORD_DB_ROLE picks the server:
#   payment            PostgreSQL 15, database "payment"
#   order, warehouse   MariaDB 10.11, database "shop_order" or "shop_warehouse"
# XACOORD_DB_PORT (5432 or 3306) and XACOORD_DB_LISTEN (127.0.0.1) say where it listens.
# On the first start it initialises the data volume: the shop schema and seed data, the xacoord
# schema, the administrator's password and the least-privileged `xacoord` user, passwords read
# from the secret files in /run/secrets (pg_admin_pw and payment_pw, or mysql_root_pw and
# order_pw / warehouse_pw). A volume whose initialisation did not finish is initialised again
# (no client ever saw it); a volume made for another role is refused.
# `db-entrypoint.sh health` is the health check: initialised and answering.
set -euo pipefail

ROLE=${XACOORD_DB_ROLE:-}
LISTEN=${XACOORD_DB_LISTEN:-127.0.0.1}
BASE=/var/lib/xacoord-db
DATA=$BASE/data
DONE=$BASE/initialised
SQL=/usr/share/xacoord/sql
SECRETS=/run/secrets
PGBIN=/usr/lib/postgresql/15/bin
PG_INIT_SOCKETS=/run/postgresql-init
MY_SOCKET=/run/mysqld/mysqld.sock
START_TIMEOUT_S=60

say() { printf 'db-entrypoint[%s]: %s\n' "$ROLE" "$*" >&2; }
die() { say "$*"; exit 1; }

# --- Settings, checked: they end up in configuration and SQL ---------------------------------

case $ROLE in
payment) KIND=postgres DB=payment PORT=${XACOORD_DB_PORT:-5432} ADMIN_SECRET=pg_admin_pw ;;
order) KIND=mariadb DB=shop_order PORT=${XACOORD_DB_PORT:-3306} ADMIN_SECRET=mysql_root_pw ;;
warehouse)
    KIND=mariadb DB=shop_warehouse PORT=${XACOORD_DB_PORT:-3306} ADMIN_SECRET=mysql_root_pw ;;
*) die "XACOORD_DB_ROLE must be payment, order or warehouse, not '$ROLE'" ;;
esac
[[ $PORT =~ ^[1-9][0-9]{0,4}$ ]] && ((PORT < 65536)) || die "XACOORD_DB_PORT '$PORT' is not a port"
[[ $LISTEN =~ ^[0-9.]+$|^[0-9a-fA-F:]+$ ]] || die "XACOORD_DB_LISTEN '$LISTEN' is not an IP address"

secret() { # NAME: the password in /run/secrets/NAME, one line of letters and digits
    local f=$SECRETS/$1 v=""
    [ -r "$f" ] || die "secret file $f is missing"
    IFS= read -r v <"$f" || true
    [[ $v =~ ^[A-Za-z0-9]{16,128}$ ]] || die "$f must hold one line of 16-128 letters and digits"
    printf '%s' "$v"
}

# --- PostgreSQL ------------------------------------------------------------------------------

as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups -- "$@"; }

pg_admin() { # DB [psql args...]: as the superuser on the initialisation socket
    local db=$1
    shift
    "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$PG_INIT_SOCKETS" -U postgres -d "$db" "$@"
}

# Two-phase commit needs max_prepared_transactions (0 disables it): above the coordinator's
# max_inflight (256). Durability settings are spelled out: a prepared branch must survive a crash.
pg_init() {
    install -d -m 0700 -o postgres -g postgres "$DATA"
    as_postgres "$PGBIN/initdb" -D "$DATA" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
    cat >>"$DATA/postgresql.conf" <<CONF

# --- docker/db-entrypoint.sh: the payment database of the example shop ---
max_prepared_transactions = 512
max_connections = 300
fsync = on
synchronous_commit = on
full_page_writes = on
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
CONF
    # The superuser without a password only on the socket inside the container; every TCP
    # client, the administrator included, presents a SCRAM password.
    cat >"$DATA/pg_hba.conf" <<CONF
local   all   postgres                trust
host    all   all       0.0.0.0/0     scram-sha-256
host    all   all       ::/0          scram-sha-256
CONF
    install -d -m 0700 -o postgres -g postgres "$PG_INIT_SOCKETS"
    as_postgres "$PGBIN/pg_ctl" -D "$DATA" -w -t "$START_TIMEOUT_S" -l "$DATA/init.log" \
        -o "-c listen_addresses='' -c unix_socket_directories=$PG_INIT_SOCKETS" start >/dev/null
    {
        # A failing statement must not copy a password into the server log.
        echo "SET log_min_error_statement = panic;"
        printf "ALTER ROLE postgres PASSWORD '%s';\n" "$(secret "$ADMIN_SECRET")"
        echo "CREATE DATABASE payment;"
    } | pg_admin postgres
    secret payment_pw >/dev/null
    pg_admin payment -f "$SQL/payment.sql" -f "$SQL/xacoord-postgres.sql" \
        -f "$SQL/payment-grants.sql" </dev/null >/dev/null
    as_postgres "$PGBIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null
}

pg_run() {
    exec setpriv --reuid=postgres --regid=postgres --init-groups -- "$PGBIN/postgres" -D "$DATA" \
        -c "listen_addresses=$LISTEN" -c "port=$PORT" -c unix_socket_directories=/run/postgresql
}

pg_health() { "$PGBIN/pg_isready" -q -t 3 -h /run/postgresql -p "$PORT" -U postgres; }

# --- MariaDB ---------------------------------------------------------------------------------

# Written at every start (the port and address may change); the data directory keeps the rest.
# Binary log off: MariaDB's XA crash recovery with the binary log on is still being reworked
# upstream, so durability rests on one InnoDB log flush per prepare and commit.
my_config() {
    cat >"$BASE/my.cnf" <<CONF
# Written by docker/db-entrypoint.sh at every start: the $ROLE database of the example shop.
[mysqld]
datadir = $DATA
socket = $MY_SOCKET
pid-file = /run/mysqld/mysqld.pid
port = $PORT
bind-address = $LISTEN
skip-name-resolve
skip-log-bin
innodb_flush_log_at_trx_commit = 1
innodb_buffer_pool_size = 64M
innodb_lock_wait_timeout = 5
max_connections = 300
CONF
}

my_admin() { mariadb --defaults-file="$BASE/my.cnf" --socket="$MY_SOCKET" -uroot "$@"; }

my_wait() { # PID: until the server answers on its socket, or fail if it exited
    local i
    for ((i = 0; i < START_TIMEOUT_S * 10; i++)); do
        mariadb-admin --socket="$MY_SOCKET" -uroot ping >/dev/null 2>&1 && return 0
        kill -0 "$1" 2>/dev/null || die "mariadbd exited during initialisation"
        sleep 0.1
    done
    die "mariadbd not ready after ${START_TIMEOUT_S}s during initialisation"
}

# root keeps the socket login of the OS root inside the container and gets a password for TCP
# from the loopback address; the coordinator's user exists for that address only.
my_init() {
    local pid
    install -d -m 0750 -o mysql -g mysql "$DATA"
    mariadb-install-db --defaults-file="$BASE/my.cnf" --user=mysql --skip-test-db \
        --auth-root-authentication-method=socket >"$BASE/init.log" 2>&1 ||
        { tail -n 20 "$BASE/init.log" >&2; die "mariadb-install-db failed"; }
    mariadbd --defaults-file="$BASE/my.cnf" --user=mysql --skip-networking \
        >>"$BASE/init.log" 2>&1 &
    pid=$!
    my_wait "$pid"
    {
        printf "CREATE USER 'root'@'127.0.0.1' IDENTIFIED BY '%s';\n" "$(secret "$ADMIN_SECRET")"
        echo "GRANT ALL ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;"
        echo "CREATE DATABASE $DB;"
        printf "CREATE USER 'xacoord'@'127.0.0.1' IDENTIFIED BY '%s';\n" "$(secret "${ROLE}_pw")"
    } | my_admin
    cat "$SQL/$ROLE.sql" "$SQL/xacoord-mysql.sql" "$SQL/mariadb-grants.sql" | my_admin "$DB"
    mariadb-admin --socket="$MY_SOCKET" -uroot shutdown
    wait "$pid" || true
}

my_run() { exec mariadbd --defaults-file="$BASE/my.cnf" --user=mysql; }

my_health() { mariadb-admin --socket="$MY_SOCKET" -uroot --connect-timeout=3 ping >/dev/null 2>&1; }

# --- Start -----------------------------------------------------------------------------------

initialise() {
    if [ -e "$DONE" ]; then
        [ "$(cat "$DONE")" = "$ROLE" ] ||
            die "the volume holds the $(cat "$DONE") database, not $ROLE: use another volume"
        return 0
    fi
    say "initialising an empty volume"
    rm -rf "$DATA"
    if [ "$KIND" = postgres ]; then pg_init; else my_init; fi
    echo "$ROLE" >"$DONE.tmp"
    sync "$BASE"
    mv "$DONE.tmp" "$DONE"
    sync "$BASE"
    say "initialised"
}

if [ "${1:-}" = health ]; then
    [ -e "$DONE" ] || exit 1
    if [ "$KIND" = postgres ]; then pg_health; else my_health; fi
    exit
fi
[ "$(id -u)" = 0 ] || die "must start as root (it hands the data volume to the server's user)"
[ "$KIND" = postgres ] || my_config
initialise
if [ "$KIND" = postgres ]; then pg_run; else my_run; fi
