-- Payment system of the example shop (PostgreSQL, database "payment").
--
-- account: one row per customer; the balance (integer money units) can never go
--   negative, so "enough balance" is enforced by the database as well as by the checkout
--   statement's own condition (balance >= amount).
-- payment: one row per paid order (order_id is the key, so an order can be paid at most
--   once); user_id must be an existing account; amount is what was debited.
--
-- Re-runnable: drops and re-creates both tables with the seed data. scripts/db grants the
-- xacoord role its privileges after loading this file.
BEGIN;

DROP TABLE IF EXISTS payment;
DROP TABLE IF EXISTS account;

CREATE TABLE account (
    user_id bigint PRIMARY KEY,
    balance bigint NOT NULL CHECK (balance >= 0)
);

CREATE TABLE payment (
    order_id   bigint PRIMARY KEY,
    user_id    bigint NOT NULL REFERENCES account,
    amount     bigint NOT NULL CHECK (amount > 0),
    created_at timestamptz DEFAULT now()
);

-- User 7 is the example customer (200, orders cost 100); 8 and 9 serve other scenarios.
INSERT INTO account (user_id, balance) VALUES (7, 200), (8, 500), (9, 500);

COMMIT;
