-- The Stripe customer of each paying account.
CREATE TABLE billing_customers (
    account_id uuid PRIMARY KEY REFERENCES accounts (id),
    stripe_customer_id text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- The subscription paying for an instance, as Herd last applied it.
CREATE TABLE subscriptions (
    instance_id uuid PRIMARY KEY REFERENCES instances (id),
    checkout_session_id text UNIQUE,
    -- Unknown until the checkout completes.
    stripe_subscription_id text UNIQUE,
    stripe_item_id text,
    -- `checkout` until the checkout completes, then Stripe's status.
    status text NOT NULL DEFAULT 'checkout',
    -- The time of the Stripe event whose status is applied: an older event
    -- delivered late changes nothing.
    status_at timestamptz,
    suspended_at timestamptz,
    final_export_id uuid REFERENCES exports (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_suspended ON subscriptions (suspended_at) WHERE suspended_at IS NOT NULL;
SELECT diesel_manage_updated_at('subscriptions');

-- Every Stripe event received. It is recorded with the job that applies it,
-- and `applied_at` is set in the transaction of its effect: a redelivered
-- event finds its id here and has no second effect.
CREATE TABLE stripe_events (
    id text PRIMARY KEY,
    type text NOT NULL,
    created_at timestamptz NOT NULL,
    payload jsonb NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    applied_at timestamptz
);

-- Herd makes the final export of an instance deleted for want of payment.
ALTER TABLE exports ALTER COLUMN requested_by DROP NOT NULL;
