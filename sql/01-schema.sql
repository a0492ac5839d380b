-- The captured table. last_updated is maintained by the server on every change, with
-- microseconds; the (last_updated, id) index serves the snapshot's keyset pagination.
CREATE TABLE IF NOT EXISTS product (
  id           BIGINT UNSIGNED NOT NULL PRIMARY KEY,
  name         VARCHAR(255)    NOT NULL,
  category     VARCHAR(100)    NULL,
  price        DECIMAL(10,2)   NOT NULL,
  last_updated TIMESTAMP(6)    NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  KEY idx_product_last_updated_id (last_updated, id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4;
