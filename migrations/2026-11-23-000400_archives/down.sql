DROP TABLE exports;
DROP TABLE archive_buckets;
ALTER TABLE instances DROP COLUMN origin;
