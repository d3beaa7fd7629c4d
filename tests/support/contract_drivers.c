/*
 * The three drivers as the contract suite sees them (contract.h): where each one's server is,
 * the statements in its dialect, and how a test learns what committed without the driver.
 */
#include "admin.h"
#include "contract.h"
#include "memory.h"

#include <stdio.h>

/* ---------------------------------------------------------------- PostgreSQL */

static void pg_target(px_target *t)
{
    tu_target(t, "payment");
}

static void pg_unreachable(px_target *t)
{
    static char ci[160];
    snprintf(ci, sizeof ci,
             "host=127.0.0.1 port=%d dbname=xatest user=xacoord sslmode=disable "
             "gssencmode=disable",
             contract_free_port());
    t->conninfo = ci;
}

/* Leftovers of an earlier run hold locks that would block the DROP. */
static void pg_setup(void)
{
    adm_run("payment", "SELECT format('ROLLBACK PREPARED %L', gid) FROM pg_prepared_xacts "
                       "WHERE gid LIKE 'xa1.ct%' AND database = current_database() \\gexec\n"
                       "DROP TABLE IF EXISTS ct_item;\n"
                       "CREATE TABLE ct_item (id bigint PRIMARY KEY, v text);\n"
                       "ALTER TABLE ct_item OWNER TO xacoord;\n");
}

const contract_driver contract_postgres = {
    .name = "postgres",
    .d = &px_postgres_driver,
    .bqual = "payment",
    .bqual_other = "warehouse",
    .target = pg_target,
    .unreachable = pg_unreachable,
    .setup = pg_setup,
    .admin = "payment",
    .write = "INSERT INTO ct_item (id, v) VALUES ($1, $2)",
    .touch = "UPDATE ct_item SET v = v WHERE id = $1",
    .no_rows = "UPDATE ct_item SET v = v WHERE id = -1",
    .two_rows = "SELECT 1 UNION ALL SELECT 2",
    .echo_text = "SELECT $1::text AS v",
    .read_text = "SELECT v, octet_length(v) FROM ct_item WHERE id = $1",
    .stored_hex = "SELECT string_agg(upper(encode(convert_to(v, 'UTF8'), 'hex')) || '=', '' "
                  "ORDER BY id) FROM ct_item WHERE id BETWEEN 700 AND 799",
    .business = "SELECT 1 / 0",
    .fatal = "SELECT * FROM pg_authid",
    .slow = "SELECT pg_sleep(2)",
    .not_found_sqlstate = "42704",
    .dirty = "SELECT set_config('search_path', 'pg_catalog', false)",
    .probe = "SHOW search_path",
    .probe_clean = "\"$user\", public",
};

/* ---------------------------------------------------------------- MariaDB */

static void my_target(px_target *t)
{
    tu_target(t, "order");
}

static void my_unreachable(px_target *t)
{
    t->port = contract_free_port();
}

static void my_setup(void)
{
    adm_run("order", "DROP TABLE IF EXISTS ct_item;"
                     "CREATE TABLE ct_item (id BIGINT PRIMARY KEY, v VARCHAR(400))"
                     " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin;");
}

/* The user variable's value comes back as binary without the CAST. */
const contract_driver contract_mysql = {
    .name = "mysql",
    .d = &px_mysql_driver,
    .bqual = "order",
    .bqual_other = "warehouse",
    .target = my_target,
    .unreachable = my_unreachable,
    .setup = my_setup,
    .admin = "order",
    .write = "INSERT INTO ct_item (id, v) VALUES (?, ?)",
    .touch = "UPDATE ct_item SET v = v WHERE id = ?",
    .no_rows = "UPDATE ct_item SET v = v WHERE id = -1",
    .two_rows = "SELECT 1 UNION ALL SELECT 2",
    .echo_text = "SELECT ? AS v",
    .read_text = "SELECT v, LENGTH(v) FROM ct_item WHERE id = ?",
    .stored_hex = "SELECT GROUP_CONCAT(CONCAT(HEX(v), '=') ORDER BY id SEPARATOR '') "
                  "FROM ct_item WHERE id BETWEEN 700 AND 799",
    .business = "SELECT nosuchcolumn FROM ct_item",
    .fatal = "SELECT * FROM mysql.user",
    .slow = "SELECT SLEEP(2)",
    .not_found_sqlstate = "XAE04",
    .dirty = "SET @ct_v = 'dirty'",
    .probe = "SELECT CAST(IFNULL(@ct_v, 'clean') AS CHAR)",
    .probe_clean = "clean",
    .detach_after_close = true,
};

/* ---------------------------------------------------------------- memory */

static void mem_target(px_target *t)
{
    *t = (px_target){.name = "ct", .driver = "memory"};
}

/* Another server's name, and that server is down. */
static void mem_unreachable(px_target *t)
{
    t->name = "ct_down";
    px_memory_set_down("ct_down", true);
}

/* The memory server keeps each branch's outcome; it has no rows. */
static int mem_count_committed(const px_xid *xs, const int64_t *ids, int n)
{
    int count = 0;
    for (int i = 0; i < n; i++)
        count += px_memory_outcome("ct", &xs[i]) == PX_MEM_COMMITTED;
    return count;
}

/* Statements in the memory driver's language (participants/memory.h). */
const contract_driver contract_memory = {
    .name = "memory",
    .d = &px_memory_driver,
    .bqual = "ct",
    .bqual_other = "ct2",
    .target = mem_target,
    .unreachable = mem_unreachable,
    .count_committed = mem_count_committed,
    .write = "rows 1",
    .touch = "rows 1",
    .no_rows = "rows 0",
    .two_rows = "rows 2",
    .echo_text = "echo",
    .business = "error business",
    .fatal = "error fatal",
    .slow = "sleep 2000",
    .not_found_sqlstate = "42704",
};
