-- Runs once, when the payment container initialises an empty data directory, after
-- 10-shop.sql (the repository's sql/payment.sql) has created the shop tables and
-- 15-xacoord-schema.sql (sql/xacoord-postgres.sql) the coordinator's own. Creates the
-- coordinator's role with the password from its secret file and grants it exactly what the
-- checkout and ship transactions and the xacoord schema need, as scripts/db does for the local
-- servers.
--
-- psql reads the password itself (backquote), so it never appears in a command line; and a
-- failing statement must not copy it into the server log.
SET log_min_error_statement = panic;
\set xacoord_pw `cat /run/secrets/payment_pw`
CREATE ROLE xacoord LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'xacoord_pw';
\unset xacoord_pw
RESET log_min_error_statement;

REVOKE ALL ON DATABASE payment FROM PUBLIC;
REVOKE CONNECT ON DATABASE postgres FROM PUBLIC;
GRANT CONNECT ON DATABASE payment TO xacoord;
REVOKE ALL ON SCHEMA public FROM PUBLIC;
GRANT USAGE ON SCHEMA public TO xacoord;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO xacoord;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO xacoord;
GRANT USAGE ON SCHEMA xacoord TO xacoord;
GRANT SELECT, INSERT, DELETE ON xacoord.marker TO xacoord;
GRANT SELECT ON xacoord.schema_version TO xacoord;
