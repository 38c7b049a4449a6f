-- People who use Herd: customers own instances, operators run the fleet.
CREATE TABLE accounts (
    id uuid PRIMARY KEY,
    email text NOT NULL,
    role text NOT NULL CHECK (role IN ('customer', 'operator')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (email = lower(email))
);
CREATE UNIQUE INDEX accounts_email ON accounts (email);
SELECT diesel_manage_updated_at('accounts');

-- Bearer tokens. Only a SHA-256 of each token is kept: the tokens are 256
-- random bits, so a fast hash is as strong as a slow one and keeps every
-- request's lookup cheap.
CREATE TABLE api_tokens (
    id uuid PRIMARY KEY,
    account_id uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    token_sha256 bytea NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    -- The token's first characters, so a person can tell tokens apart.
    display_prefix text NOT NULL,
    name text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    expires_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX api_tokens_account ON api_tokens (account_id);

-- What customers buy. The sizing is the validated herd-core Plan as JSON: it
-- changes shape with Mastodon's processes, and is always read whole.
CREATE TABLE plans (
    name text PRIMARY KEY CHECK (name ~ '^[a-z0-9-]{1,40}$'),
    sizing jsonb NOT NULL,
    -- The Stripe Price a subscription to this plan uses; NULL without billing.
    stripe_price_id text,
    offered boolean NOT NULL DEFAULT true,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
SELECT diesel_manage_updated_at('plans');

-- Fleet members. Credentials are sealed with Herd's secret key (AEAD), bound
-- to the row's id, so a copied database alone reveals none of them.
CREATE TABLE clusters (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    region text NOT NULL,
    kubeconfig_sealed bytea NOT NULL,
    capacity_instances integer NOT NULL CHECK (capacity_instances >= 0),
    state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'draining', 'retired')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
SELECT diesel_manage_updated_at('clusters');

-- PostgreSQL servers tenant databases are created on.
CREATE TABLE database_servers (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    region text NOT NULL,
    -- Where tenants' pods reach the server, which may differ from where Herd does.
    tenant_host text NOT NULL,
    tenant_port integer NOT NULL CHECK (tenant_port BETWEEN 1 AND 65535),
    admin_url_sealed bytea NOT NULL,
    capacity_databases integer NOT NULL CHECK (capacity_databases >= 0),
    state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'draining', 'retired')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
SELECT diesel_manage_updated_at('database_servers');

-- S3 stores tenant buckets are created on, with their admin API.
CREATE TABLE object_stores (
    id uuid PRIMARY KEY,
    name text NOT NULL UNIQUE,
    region text NOT NULL,
    s3_endpoint text NOT NULL,
    s3_region text NOT NULL,
    admin_endpoint text NOT NULL,
    admin_token_sealed bytea NOT NULL,
    state text NOT NULL DEFAULT 'active' CHECK (state IN ('active', 'draining', 'retired')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
SELECT diesel_manage_updated_at('object_stores');

-- Domains no customer may order (the operator's own, well-known services).
CREATE TABLE reserved_domains (
    domain text PRIMARY KEY,
    reason text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE instances (
    id uuid PRIMARY KEY,
    owner_id uuid NOT NULL REFERENCES accounts (id),
    domain text NOT NULL,
    web_domain text NOT NULL,
    -- The e-mail of the Mastodon owner account the setup creates.
    owner_email text NOT NULL,
    plan_name text NOT NULL REFERENCES plans (name),
    version text NOT NULL,
    cluster_id uuid REFERENCES clusters (id),
    database_server_id uuid REFERENCES database_servers (id),
    object_store_id uuid REFERENCES object_stores (id),
    state text NOT NULL DEFAULT 'pending' CHECK (state IN
        ('pending', 'provisioning', 'running', 'updating', 'suspended', 'deleting', 'deleted', 'failed')),
    failure_reason text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    deleted_at timestamptz,
    CHECK ((state = 'failed') = (failure_reason IS NOT NULL))
);
-- A domain is hosted once at a time; a deleted instance frees it.
CREATE UNIQUE INDEX instances_live_domain ON instances (domain) WHERE state <> 'deleted';
CREATE UNIQUE INDEX instances_live_web_domain ON instances (web_domain) WHERE state <> 'deleted';
CREATE INDEX instances_owner ON instances (owner_id);
SELECT diesel_manage_updated_at('instances');

-- Mastodon's generated keys and the tenant's credentials, sealed as one
-- document: generated once and never rotated, because rotating them logs
-- every user out and breaks 2FA and encrypted columns.
CREATE TABLE instance_secrets (
    instance_id uuid PRIMARY KEY REFERENCES instances (id) ON DELETE CASCADE,
    sealed bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Long-running work as people see it; the job queue does the work.
CREATE TABLE operations (
    id uuid PRIMARY KEY,
    instance_id uuid NOT NULL REFERENCES instances (id),
    kind text NOT NULL,
    state text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'running', 'succeeded', 'failed')),
    progress integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
    steps jsonb NOT NULL DEFAULT '[]'::jsonb,
    error text,
    started_by uuid REFERENCES accounts (id),
    job_id uuid REFERENCES jobs (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX operations_instance ON operations (instance_id);
SELECT diesel_manage_updated_at('operations');

-- A retried request with the same Idempotency-Key gets the first answer.
CREATE TABLE idempotency_keys (
    account_id uuid NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key text NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    request_sha256 bytea NOT NULL,
    response_status integer NOT NULL,
    response_body jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account_id, key)
);

-- Who did what to which object, when. Append-only.
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    at timestamptz NOT NULL DEFAULT now(),
    actor_id uuid REFERENCES accounts (id),
    -- 'account' when actor_id is set, otherwise the subsystem: 'reconciler', 'billing', ...
    actor text NOT NULL,
    action text NOT NULL,
    object_kind text NOT NULL,
    object_id text NOT NULL,
    details jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX audit_log_object ON audit_log (object_kind, object_id, at);
