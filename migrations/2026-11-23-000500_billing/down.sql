DROP TABLE stripe_events;
DROP TABLE subscriptions;
DROP TABLE billing_customers;
DELETE FROM exports WHERE requested_by IS NULL;
ALTER TABLE exports ALTER COLUMN requested_by SET NOT NULL;
