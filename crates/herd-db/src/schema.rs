// Written by hand to match `migrations/`: a column a migration adds or
// changes must be changed here as well.

diesel::table! {
    jobs (id) {
        id -> Uuid,
        kind -> Text,
        payload -> Jsonb,
        state -> Text,
        attempts -> Int4,
        max_attempts -> Int4,
        run_after -> Timestamptz,
        locked_by -> Nullable<Text>,
        locked_until -> Nullable<Timestamptz>,
        last_error -> Nullable<Text>,
        dedupe_key -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    job_steps (job_id, step) {
        job_id -> Uuid,
        step -> Text,
        completed_at -> Timestamptz,
        output -> Jsonb,
    }
}

diesel::table! {
    outbox (id) {
        id -> Int8,
        topic -> Text,
        payload -> Jsonb,
        created_at -> Timestamptz,
        delivered_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(job_steps -> jobs (job_id));
diesel::allow_tables_to_appear_in_same_query!(jobs, job_steps);

diesel::table! {
    accounts (id) {
        id -> Uuid,
        email -> Text,
        role -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    api_tokens (id) {
        id -> Uuid,
        account_id -> Uuid,
        token_sha256 -> Bytea,
        display_prefix -> Text,
        name -> Text,
        created_at -> Timestamptz,
        last_used_at -> Nullable<Timestamptz>,
        expires_at -> Nullable<Timestamptz>,
        revoked_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    plans (name) {
        name -> Text,
        sizing -> Jsonb,
        stripe_price_id -> Nullable<Text>,
        offered -> Bool,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    clusters (id) {
        id -> Uuid,
        name -> Text,
        region -> Text,
        kubeconfig_sealed -> Bytea,
        capacity_instances -> Int4,
        state -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    database_servers (id) {
        id -> Uuid,
        name -> Text,
        region -> Text,
        tenant_host -> Text,
        tenant_port -> Int4,
        admin_url_sealed -> Bytea,
        capacity_databases -> Int4,
        state -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    object_stores (id) {
        id -> Uuid,
        name -> Text,
        region -> Text,
        s3_endpoint -> Text,
        s3_region -> Text,
        admin_endpoint -> Text,
        admin_token_sealed -> Bytea,
        state -> Text,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    reserved_domains (domain) {
        domain -> Text,
        reason -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    instances (id) {
        id -> Uuid,
        owner_id -> Uuid,
        domain -> Text,
        web_domain -> Text,
        owner_email -> Text,
        plan_name -> Text,
        version -> Text,
        cluster_id -> Nullable<Uuid>,
        database_server_id -> Nullable<Uuid>,
        object_store_id -> Nullable<Uuid>,
        state -> Text,
        failure_reason -> Nullable<Text>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        deleted_at -> Nullable<Timestamptz>,
        origin -> Text,
    }
}

diesel::table! {
    archive_buckets (object_store_id) {
        object_store_id -> Uuid,
        bucket -> Text,
        access_key_sealed -> Bytea,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    exports (id) {
        id -> Uuid,
        instance_id -> Uuid,
        operation_id -> Uuid,
        requested_by -> Nullable<Uuid>,
        state -> Text,
        compressed -> Bool,
        recipient -> Nullable<Text>,
        push_sealed -> Nullable<Bytea>,
        object_store_id -> Nullable<Uuid>,
        object_key -> Nullable<Text>,
        file_name -> Nullable<Text>,
        size_bytes -> Nullable<Int8>,
        sha256 -> Nullable<Text>,
        created_at -> Timestamptz,
        completed_at -> Nullable<Timestamptz>,
        expires_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    instance_secrets (instance_id) {
        instance_id -> Uuid,
        sealed -> Bytea,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    operations (id) {
        id -> Uuid,
        instance_id -> Uuid,
        kind -> Text,
        state -> Text,
        progress -> Int4,
        steps -> Jsonb,
        error -> Nullable<Text>,
        started_by -> Nullable<Uuid>,
        job_id -> Nullable<Uuid>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
        details -> Nullable<Jsonb>,
    }
}

diesel::table! {
    idempotency_keys (account_id, key) {
        account_id -> Uuid,
        key -> Text,
        request_sha256 -> Bytea,
        response_status -> Int4,
        response_body -> Jsonb,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    audit_log (id) {
        id -> Int8,
        at -> Timestamptz,
        actor_id -> Nullable<Uuid>,
        actor -> Text,
        action -> Text,
        object_kind -> Text,
        object_id -> Text,
        details -> Jsonb,
    }
}

diesel::table! {
    billing_customers (account_id) {
        account_id -> Uuid,
        stripe_customer_id -> Text,
        created_at -> Timestamptz,
    }
}

diesel::table! {
    subscriptions (instance_id) {
        instance_id -> Uuid,
        checkout_session_id -> Nullable<Text>,
        stripe_subscription_id -> Nullable<Text>,
        stripe_item_id -> Nullable<Text>,
        status -> Text,
        status_at -> Nullable<Timestamptz>,
        suspended_at -> Nullable<Timestamptz>,
        final_export_id -> Nullable<Uuid>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    stripe_events (id) {
        id -> Text,
        #[sql_name = "type"]
        type_ -> Text,
        created_at -> Timestamptz,
        payload -> Jsonb,
        received_at -> Timestamptz,
        applied_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    instance_scaling (instance_id) {
        instance_id -> Uuid,
        scaling -> Jsonb,
        updated_at -> Timestamptz,
    }
}

diesel::table! {
    instance_upgrades (operation_id) {
        operation_id -> Uuid,
        instance_id -> Uuid,
        from_version -> Text,
        to_version -> Text,
        stage -> Text,
        rollout_timeout_seconds -> Int4,
        export_id -> Nullable<Uuid>,
        failure -> Nullable<Text>,
        stage_started_at -> Timestamptz,
        created_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
    }
}

diesel::joinable!(api_tokens -> accounts (account_id));
diesel::joinable!(subscriptions -> instances (instance_id));
diesel::joinable!(instances -> accounts (owner_id));
diesel::joinable!(instances -> plans (plan_name));
diesel::joinable!(instance_secrets -> instances (instance_id));
diesel::joinable!(operations -> instances (instance_id));
diesel::joinable!(exports -> instances (instance_id));
diesel::allow_tables_to_appear_in_same_query!(
    accounts,
    api_tokens,
    plans,
    clusters,
    database_servers,
    object_stores,
    instances,
    instance_secrets,
    operations,
    jobs,
    exports,
    archive_buckets,
    subscriptions,
    billing_customers,
    stripe_events,
    instance_upgrades,
    fleet_upgrades,
    fleet_upgrade_members,
    cluster_drains,
);

diesel::table! {
    fleet_upgrades (id) {
        id -> Uuid,
        from_version -> Text,
        to_version -> Text,
        canary -> Int4,
        wave_size -> Int4,
        max_failure_ratio -> Float8,
        rollout_timeout_seconds -> Int4,
        state -> Text,
        paused_reason -> Nullable<Text>,
        created_by -> Nullable<Uuid>,
        created_at -> Timestamptz,
        updated_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    cluster_drains (id) {
        id -> Uuid,
        cluster_id -> Uuid,
        concurrency -> Int4,
        state -> Text,
        error -> Nullable<Text>,
        started_by -> Nullable<Uuid>,
        created_at -> Timestamptz,
        finished_at -> Nullable<Timestamptz>,
    }
}

diesel::table! {
    fleet_upgrade_members (upgrade_id, instance_id) {
        upgrade_id -> Uuid,
        instance_id -> Uuid,
        wave -> Int4,
        state -> Text,
        operation_id -> Nullable<Uuid>,
        updated_at -> Timestamptz,
    }
}

diesel::joinable!(fleet_upgrade_members -> fleet_upgrades (upgrade_id));
diesel::joinable!(fleet_upgrade_members -> instances (instance_id));
diesel::joinable!(cluster_drains -> clusters (cluster_id));
