-- An instance scaled by hand on top of its plan (herd_core::scaling::Scaling);
-- no row means the plan as it is.
CREATE TABLE instance_scaling (
    instance_id uuid PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
    scaling jsonb NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
