-- Warehouse system of the example shop (MariaDB/MySQL, database "shop_warehouse").
--
-- stock: units on the shelf per article (sku); never negative, so "out of stock" is both
--   the checkout statement's condition (qty >= wanted) and a constraint.
-- shipment: the outbound shipment of one order (order_id is the key: at most one per
--   order), with the article and quantity taken from stock; status 'R' reserved at checkout,
--   'S' shipped (left the warehouse). Units of a shipment are no longer in stock, so per SKU
--   stock.qty + sum(shipment.qty) stays constant.
--
-- Re-runnable: drops and re-creates both tables with the seed data.
DROP TABLE IF EXISTS shipment;
DROP TABLE IF EXISTS stock;

CREATE TABLE stock (
    sku VARCHAR(32) NOT NULL PRIMARY KEY,
    qty INT         NOT NULL CHECK (qty >= 0)
) ENGINE = InnoDB;

CREATE TABLE shipment (
    order_id BIGINT      NOT NULL PRIMARY KEY,
    sku      VARCHAR(32) NOT NULL,
    qty      INT         NOT NULL CHECK (qty > 0),
    status   CHAR(1)     NOT NULL DEFAULT 'R' CHECK (status IN ('R', 'S'))
) ENGINE = InnoDB;

-- SKU-2 is out of stock on purpose: its checkout must abort after the payment branch
-- already did its work.
INSERT INTO stock (sku, qty) VALUES ('SKU-1', 10), ('SKU-2', 0), ('SKU-3', 5);
