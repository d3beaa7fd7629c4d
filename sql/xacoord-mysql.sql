-- The xacoord tables in a MySQL/MariaDB participant database (docs/operations.md section 2,
-- "Preparing the databases").
--
-- The coordinator keeps a few rows of its own in every participant database: one marker row
-- per branch (its gtrid and bqual, written inside the branch, so that the marker commits or
-- rolls back with the branch's work). MySQL has no schemas inside a database, so the tables
-- carry the prefix `xacoord_`, which keeps them apart from an application's tables.
--
-- Run it once in each participant database, as a user that may create tables there:
--     mysql shop_order < sql/xacoord-mysql.sql
-- or let the coordinator do it with its own user, if that user has CREATE on the database:
--     xacoord --init-participants /etc/xacoord/xacoord.ini
-- Running it again changes nothing. xacoord checks the tables at start and on every recovery
-- scan, and keeps a participant whose tables are missing out of service (/readyz says why).
--
-- Then give the coordinator's user (here: 'xacoord'@'10.0.0.%') what it needs on them:
--     GRANT SELECT, INSERT, DELETE ON shop_order.xacoord_marker TO 'xacoord'@'10.0.0.%';
--     GRANT SELECT ON shop_order.xacoord_schema_version TO 'xacoord'@'10.0.0.%';
-- (A user with SELECT, INSERT, DELETE on the whole database already has them.) MySQL 8 also
-- needs XA_RECOVER_ADMIN for XA RECOVER: GRANT XA_RECOVER_ADMIN ON *.* TO 'xacoord'@'10.0.0.%';
--
-- xacoord --init-participants runs the statements below (one per `;` at the end of a line);
-- this file is compiled into the binary, so the two cannot differ.

-- One row per branch that xacoord prepared or committed in one phase and has not yet cleaned up.
-- gtrid and bqual are the branch's XID (gtrid "xa2.<node_id>.<identity>.<boot>.<seq>", bqual the
-- participant's name, both at most 64 bytes - the XA limits). A transaction with a single branch
-- commits in one phase, and its marker also holds the client's transaction id, the request's
-- digest and the coordinator's gtrid prefix ("xa2.<node_id>.<identity>.", the data directory whose
-- journal would otherwise remember the id): the unique key on (coordinator, client_id, bqual) makes
-- a retry of that id find the first one instead of running again (docs/design.md, "One-phase
-- commit").
-- Binary columns: XIDs compare byte for byte, as XA RECOVER reports them.
-- A version 1 table (no digest, no unique key) is brought to version 2 with
--     ALTER TABLE xacoord_marker ADD COLUMN digest VARBINARY(32) NULL,
--         ADD COLUMN coordinator VARBINARY(32) NULL,
--         ADD UNIQUE KEY marker_client_id (coordinator, client_id, bqual);
--     INSERT INTO xacoord_schema_version (version) VALUES (2);
CREATE TABLE IF NOT EXISTS xacoord_marker (
    gtrid      VARBINARY(64) NOT NULL,
    bqual      VARBINARY(64) NOT NULL,
    client_id  VARBINARY(64) NULL,
    created_at TIMESTAMP(3)  NOT NULL DEFAULT CURRENT_TIMESTAMP(3),
    digest     VARBINARY(32) NULL,
    coordinator VARBINARY(32) NULL,
    PRIMARY KEY (gtrid, bqual),
    UNIQUE KEY marker_client_id (coordinator, client_id, bqual)
) ENGINE = InnoDB;

-- The versions of this schema applied here, one row each; the schema's version is the largest.
-- (A primary key, so that servers with sql_require_primary_key = ON accept the table.)
CREATE TABLE IF NOT EXISTS xacoord_schema_version (
    version INT NOT NULL PRIMARY KEY
) ENGINE = InnoDB;

INSERT INTO xacoord_schema_version (version) VALUES (1), (2) ON DUPLICATE KEY UPDATE version = version;
