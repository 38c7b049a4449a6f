DROP INDEX operations_details_drain;
DROP TABLE cluster_drains;
ALTER TABLE operations DROP COLUMN details;
