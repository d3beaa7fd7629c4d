-- Order system of the example shop (MariaDB/MySQL, database "shop_order").
--
-- orders: one row per customer order: who ordered (user_id), what it costs (amount), which
--   article and how many (sku, qty), and where it is in its life:
--   status 'I' initial -> 'P' paid (checkout committed) -> 'W' shipped out of the warehouse.
--   The global transactions move it only with conditional updates (WHERE status = ...), so
--   a repeated or concurrent checkout matches no row and aborts.
--
-- Re-runnable: drops and re-creates the table with the seed data.
DROP TABLE IF EXISTS orders;

CREATE TABLE orders (
    id      BIGINT      NOT NULL PRIMARY KEY,
    user_id BIGINT      NOT NULL,
    amount  BIGINT      NOT NULL CHECK (amount > 0),
    sku     VARCHAR(32) NOT NULL,
    qty     INT         NOT NULL CHECK (qty > 0),
    status  CHAR(1)     NOT NULL DEFAULT 'I' CHECK (status IN ('I', 'P', 'W'))
) ENGINE = InnoDB;

-- 1001 and 1002: the example user's two orders of SKU-1 (the balance pays for both, not a
-- third); 1003: SKU-2, which is out of stock; 1004: another user, two units of SKU-3.
INSERT INTO orders (id, user_id, amount, sku, qty, status) VALUES
    (1001, 7, 100, 'SKU-1', 1, 'I'),
    (1002, 7, 100, 'SKU-1', 1, 'I'),
    (1003, 7, 100, 'SKU-2', 1, 'I'),
    (1004, 8, 100, 'SKU-3', 2, 'I');
