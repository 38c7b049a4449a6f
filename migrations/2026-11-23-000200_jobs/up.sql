-- Long operations run as jobs that outlive any one Herd process: a worker
-- holds a job through a lease, and a crashed worker's job becomes claimable
-- again once the lease runs out.
CREATE TABLE jobs (
    id uuid PRIMARY KEY,
    kind text NOT NULL,
    payload jsonb NOT NULL DEFAULT '{}'::jsonb,
    state text NOT NULL DEFAULT 'queued'
        CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    attempts integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    max_attempts integer NOT NULL CHECK (max_attempts >= 1),
    run_after timestamptz NOT NULL DEFAULT now(),
    locked_by text,
    locked_until timestamptz,
    last_error text,
    -- Names a piece of work, so enqueuing it twice yields one job.
    dedupe_key text UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    -- A running job always has a holder, so a lease can always expire.
    CHECK (state <> 'running' OR (locked_by IS NOT NULL AND locked_until IS NOT NULL))
);

-- Claiming scans queued jobs due now and running jobs whose lease ran out.
CREATE INDEX jobs_claim ON jobs (state, run_after);

SELECT diesel_manage_updated_at('jobs');

-- One checkpoint per completed step: a resumed job skips what it already did.
CREATE TABLE job_steps (
    job_id uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    step text NOT NULL,
    -- The wall clock rather than the transaction's start, so steps recorded
    -- in one transaction still list in the order they completed.
    completed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    output jsonb NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (job_id, step)
);

-- Events written in the same transaction as the change they announce, and
-- delivered afterwards by a relay, at least once.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    topic text NOT NULL,
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz
);

-- The relay only ever looks for what is still undelivered.
CREATE INDEX outbox_undelivered ON outbox (id) WHERE delivered_at IS NULL;
