-- Runs once, when an order or warehouse container initialises an empty data directory, in the
-- container's own database (MYSQL_DATABASE), after 10-shop.sql (the repository's
-- sql/order.sql or sql/warehouse.sql) has created the shop tables and 15-xacoord-schema.sql
-- (sql/xacoord-mysql.sql) the coordinator's own, which the grant on the database covers.
--
-- The image's entrypoint already created 'xacoord'@'%' from MYSQL_USER and MYSQL_PASSWORD_FILE
-- (so the password never passes through this file), with ALL on the database. Narrow that to
-- what checkout and ship need, plus XA_RECOVER_ADMIN: without it MySQL 8 refuses the XA RECOVER
-- of the coordinator's recovery scan (MariaDB does not have or need this privilege).
REVOKE ALL PRIVILEGES, GRANT OPTION FROM 'xacoord'@'%';
SET @grant_shop = CONCAT('GRANT SELECT, INSERT, UPDATE, DELETE ON `', DATABASE(),
                         '`.* TO ''xacoord''@''%''');
PREPARE grant_shop FROM @grant_shop;
EXECUTE grant_shop;
DEALLOCATE PREPARE grant_shop;
GRANT XA_RECOVER_ADMIN ON *.* TO 'xacoord'@'%';
