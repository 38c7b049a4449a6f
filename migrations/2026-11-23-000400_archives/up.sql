-- How an instance came to be: ordered fresh, or restored from an archive.
-- An imported instance's setup migrates the restored database instead of
-- creating one, and must not create an owner account it already has.
ALTER TABLE instances ADD COLUMN origin text NOT NULL DEFAULT 'ordered'
    CHECK (origin IN ('ordered', 'imported'));

-- The bucket on each object store where Herd keeps archives: finished
-- exports and imports waiting to be restored. Its key is Herd's alone and
-- sealed like every other credential.
CREATE TABLE archive_buckets (
    object_store_id uuid PRIMARY KEY REFERENCES object_stores (id),
    bucket text NOT NULL,
    access_key_sealed bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- An export's progress and error are its operation's.
CREATE TABLE exports (
    id uuid PRIMARY KEY,
    instance_id uuid NOT NULL REFERENCES instances (id),
    operation_id uuid NOT NULL REFERENCES operations (id),
    requested_by uuid NOT NULL REFERENCES accounts (id),
    state text NOT NULL DEFAULT 'pending'
        CHECK (state IN ('pending', 'running', 'complete', 'failed', 'expired')),
    compressed boolean NOT NULL,
    -- An age public key: the archive is encrypted to it, and Herd cannot read it back.
    recipient text,
    -- The customer's own S3 destination with its credentials, sealed.
    push_sealed bytea,
    object_store_id uuid REFERENCES object_stores (id),
    object_key text,
    file_name text,
    size_bytes bigint,
    sha256 text,
    created_at timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz,
    expires_at timestamptz,
    CHECK (state <> 'complete' OR (object_key IS NOT NULL AND completed_at IS NOT NULL))
);
CREATE INDEX exports_instance ON exports (instance_id);
