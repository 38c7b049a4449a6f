-- A version upgrade of an instance and how far it got; its stage is the
-- checkpoint the upgrade job resumes from (herd_core::upgrade::UpgradeStage).
CREATE TABLE instance_upgrades (
    operation_id uuid PRIMARY KEY REFERENCES operations (id) ON DELETE CASCADE,
    instance_id uuid NOT NULL REFERENCES instances (id) ON DELETE CASCADE,
    from_version text NOT NULL,
    to_version text NOT NULL,
    stage text NOT NULL,
    rollout_timeout_seconds integer NOT NULL CHECK (rollout_timeout_seconds > 0),
    -- The backup taken first.
    export_id uuid REFERENCES exports (id) ON DELETE SET NULL,
    -- Why it rolled back or failed.
    failure text,
    stage_started_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

-- One upgrade at a time per instance.
CREATE UNIQUE INDEX instance_upgrades_one_active ON instance_upgrades (instance_id)
    WHERE stage NOT IN ('succeeded', 'rolled_back', 'failed');
