-- Least privilege for the connector (replace the password). REPLICATION SLAVE reads the binlog,
-- REPLICATION CLIENT (BINLOG MONITOR on MariaDB >= 10.5, implied by this grant there) reads
-- the binlog position, SELECT reads the table (snapshot, schema). Nothing more.
CREATE USER IF NOT EXISTS 'rtis'@'%' IDENTIFIED BY 'change-me';
GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'rtis'@'%';
GRANT SELECT ON product TO 'rtis'@'%';
