-- The xacoord schema in a PostgreSQL participant database (docs/operations.md section 2,
-- "Preparing the databases").
--
-- The coordinator keeps a few rows of its own in every participant database: one marker row
-- per branch (its gtrid and bqual, written inside the branch, so that the marker commits or
-- rolls back with the branch's work). Everything lives in a schema of its own, `xacoord`, so
-- it can never collide with an application's tables.
--
-- Run it once in each participant database, as a role that may create schemas there (the
-- database owner or a superuser):
--     psql -d payment -f sql/xacoord-postgres.sql
-- or let the coordinator do it with its own role, if that role may create schemas there:
--     xacoord --init-participants /etc/xacoord/xacoord.ini
-- Running it again changes nothing. xacoord checks the schema at start and on every recovery
-- scan, and keeps a participant whose schema is missing out of service (/readyz says why).
--
-- Then give the coordinator's role (here: xacoord) what it needs, and nothing more - it must not
-- own the schema or be able to create objects in it (docs/operations.md section 2):
--     GRANT USAGE ON SCHEMA xacoord TO xacoord;
--     GRANT SELECT, INSERT, DELETE ON xacoord.marker TO xacoord;
--     GRANT SELECT ON xacoord.schema_version TO xacoord;
--
-- xacoord --init-participants runs the statements below (one per `;` at the end of a line) in
-- one transaction; this file is compiled into the binary, so the two cannot differ.

CREATE SCHEMA IF NOT EXISTS xacoord;

-- One row per branch that xacoord prepared or committed in one phase and has not yet cleaned up.
-- gtrid and bqual are the branch's XID (gtrid "xa2.<node_id>.<identity>.<boot>.<seq>", bqual the
-- participant's name, both at most 64 bytes of [a-z0-9._]). A transaction with a single branch
-- commits in one phase, and its marker also holds the client's transaction id, the request's
-- digest and the coordinator's gtrid prefix ("xa2.<node_id>.<identity>.", the data directory whose
-- journal would otherwise remember the id): the unique key on (coordinator, client_id, bqual) makes
-- a retry of that id find the first one instead of running again (docs/design.md, "One-phase
-- commit").
CREATE TABLE IF NOT EXISTS xacoord.marker (
    gtrid      varchar(64) NOT NULL,
    bqual      varchar(64) NOT NULL,
    client_id  varchar(64),
    created_at timestamptz NOT NULL DEFAULT now(),
    digest     varchar(32),
    coordinator varchar(32),
    PRIMARY KEY (gtrid, bqual)
);

-- Version 2 (one-phase commit) on a version 1 schema.
ALTER TABLE xacoord.marker ADD COLUMN IF NOT EXISTS digest varchar(32);
ALTER TABLE xacoord.marker ADD COLUMN IF NOT EXISTS coordinator varchar(32);
CREATE UNIQUE INDEX IF NOT EXISTS marker_client_id ON xacoord.marker (coordinator, client_id, bqual);

-- The versions of this schema applied here, one row each; the schema's version is the largest.
CREATE TABLE IF NOT EXISTS xacoord.schema_version (
    version int NOT NULL PRIMARY KEY
);

INSERT INTO xacoord.schema_version (version) VALUES (1), (2) ON CONFLICT DO NOTHING;
