-- An operator's upgrade of every instance on one version to another, in
-- waves (herd_core::waves).
CREATE TABLE fleet_upgrades (
    id uuid PRIMARY KEY,
    from_version text NOT NULL,
    to_version text NOT NULL,
    canary integer NOT NULL CHECK (canary >= 0),
    wave_size integer NOT NULL CHECK (wave_size >= 1),
    max_failure_ratio double precision NOT NULL
        CHECK (max_failure_ratio >= 0 AND max_failure_ratio <= 1),
    rollout_timeout_seconds integer NOT NULL CHECK (rollout_timeout_seconds >= 1),
    state text NOT NULL DEFAULT 'running'
        CHECK (state IN ('running', 'paused', 'aborted', 'completed')),
    paused_reason text,
    created_by uuid REFERENCES accounts (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);

-- One upgrade of a version at a time: two would race for the same instances.
CREATE UNIQUE INDEX fleet_upgrades_one_open_per_version
    ON fleet_upgrades (from_version) WHERE state IN ('running', 'paused');

CREATE TABLE fleet_upgrade_members (
    upgrade_id uuid NOT NULL REFERENCES fleet_upgrades (id) ON DELETE CASCADE,
    instance_id uuid NOT NULL REFERENCES instances (id),
    wave integer NOT NULL CHECK (wave >= 0),
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'upgrading', 'succeeded', 'failed', 'skipped')),
    -- The instance's upgrade operation of the latest attempt.
    operation_id uuid REFERENCES operations (id),
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (upgrade_id, instance_id)
);

CREATE INDEX fleet_upgrade_members_by_wave ON fleet_upgrade_members (upgrade_id, wave);
