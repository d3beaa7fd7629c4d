-- Runs once, when an order or warehouse container of docker/Containerfile.db initialises an
-- empty data directory, in the shop database, after the shop tables (sql/order.sql or
-- sql/warehouse.sql) and the xacoord tables (sql/xacoord-mysql.sql). The entrypoint has
-- created 'xacoord'@'127.0.0.1' with the password from its secret file (it never appears in
-- a file or a command line); this grants it exactly what checkout and ship need on the shop
-- database, which covers the xacoord tables. MariaDB lets such a user run XA RECOVER, COMMIT
-- and ROLLBACK; MySQL 8 would also need XA_RECOVER_ADMIN (docker/mysql/20-xacoord.sql).
SET @grant_shop = CONCAT('GRANT SELECT, INSERT, UPDATE, DELETE ON `', DATABASE(),
                         '`.* TO ''xacoord''@''127.0.0.1''');
PREPARE grant_shop FROM @grant_shop;
EXECUTE grant_shop;
DEALLOCATE PREPARE grant_shop;
