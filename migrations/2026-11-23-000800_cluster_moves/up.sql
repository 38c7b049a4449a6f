-- What an operation measured besides its steps: a move between clusters
-- reports its write freeze and the bytes it copied.
ALTER TABLE operations ADD COLUMN details jsonb;

-- The moves of instances off a cluster being drained: a bounded number at a time.
CREATE TABLE cluster_drains (
    id uuid PRIMARY KEY,
    cluster_id uuid NOT NULL REFERENCES clusters (id),
    concurrency integer NOT NULL CHECK (concurrency > 0),
    state text NOT NULL DEFAULT 'running' CHECK (state IN ('running', 'succeeded', 'failed')),
    error text,
    started_by uuid REFERENCES accounts (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE UNIQUE INDEX cluster_drains_one_running ON cluster_drains (cluster_id) WHERE state = 'running';
CREATE INDEX operations_details_drain ON operations ((details ->> 'drain_id')) WHERE details ? 'drain_id';
