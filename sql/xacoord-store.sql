-- The decision store: where coordinators with `decision_log = postgres` keep their commit
-- decisions and their node leases (docs/design.md section 3, "Decision store";
-- docs/operations.md, "Several coordinators").
--
-- One PostgreSQL database holds it for every coordinator that shares it. It may be a
-- participant's database. Run this file once in it, as a role that may create tables there:
--     psql -d xacoord -f sql/xacoord-store.sql
-- or let the coordinator do it with its own role (`xacoord --init-participants CONFIG` also
-- creates the store's tables when its configuration says decision_log = postgres). Running it
-- again changes nothing. Then give the coordinator's role (here: xacoord) what it needs:
--     GRANT SELECT, INSERT, UPDATE, DELETE ON xacoord_decisions, xacoord_nodes TO xacoord;
--
-- This file is compiled into the binary, so the two cannot differ. Statements end with a `;`
-- at the end of a line.

-- One row per decided transaction of any coordinator sharing the store.
--   gtrid        the transaction's XID ("xa2.<node_id>.<identity>.<boot>.<seq>")
--   client_id    the client's id (or the gtrid when the client named none); UNIQUE, so that an
--                id retried on two coordinators at once is decided once: the second insert
--                finds the first row and answers from it
--   digest       the request's digest (hex): the same id with another request is 422
--   outcome      'commit' (written before any COMMIT is sent, and that write is the decision) or
--                'abort' (written lazily, for replay; no row at all also means abort)
--   status, reply  the HTTP status and the reply body without its closing part, as the client
--                got it (replay and GET answer from them)
--   pending      participants whose branch is not yet acknowledged, comma-separated; '' when
--                all are (a row is deleted after the retention only once nothing is pending)
--   node_id, epoch  who decided, under which epoch of its node row (see xacoord_nodes)
CREATE TABLE IF NOT EXISTS xacoord_decisions (
    gtrid       varchar(64) PRIMARY KEY,
    client_id   varchar(64) NOT NULL UNIQUE,
    digest      varchar(32) NOT NULL,
    outcome     varchar(8) NOT NULL CHECK (outcome IN ('commit', 'abort')),
    status      int NOT NULL,
    reply       text NOT NULL,
    pending     text NOT NULL DEFAULT '',
    node_id     varchar(16) NOT NULL,
    epoch       bigint NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS xacoord_decisions_unfinished ON xacoord_decisions (node_id)
    WHERE pending <> '';

CREATE INDEX IF NOT EXISTS xacoord_decisions_created ON xacoord_decisions (created_at);

-- One row per coordinator node. A decision row is written only in a transaction that holds this
-- row FOR SHARE at the epoch the writer started under; a takeover (or the node's own restart)
-- adds 1 to epoch, which waits for every such transaction in flight and makes every later one
-- insert nothing. holder names the process that holds the lease, expires_at when it lapses if
-- not renewed (the store's clock; only liveness depends on it).
CREATE TABLE IF NOT EXISTS xacoord_nodes (
    node_id     varchar(16) PRIMARY KEY,
    epoch       bigint NOT NULL,
    holder      varchar(64) NOT NULL,
    expires_at  timestamptz NOT NULL
);
