//! The REST API end to end: the real actix app, in process, against a
//! database of its own per test.

use actix_web::body::MessageBody;
use actix_web::dev::{Service, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderMap};
use actix_web::{App, test};
use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use herd_core::lifecycle::LifecycleEvent;
use herd_db::accounts::Role;
use herd_e2e::TestDatabase;
use serde_json::{Value, json};
use uuid::Uuid;

struct Harness {
    db: TestDatabase,
    state: herd_api::ApiState,
}

impl Harness {
    async fn start() -> Self {
        let db = TestDatabase::create("herd_api").await;
        let mut conn = db.connect().await;
        herd_db::plans::seed_plans(&mut conn, &herd_core::plan::starter_plans())
            .await
            .expect("seed plans");
        let pool = herd_db::connect(&db.url, 8);
        let sealer = herd_db::Sealer::new(&herd_db::Sealer::generate_key().expect("key"), &[])
            .expect("sealer");
        let state = herd_api::ApiState {
            archives: std::sync::Arc::new(herd_jobs::archives::Archives::new(
                pool.clone(),
                sealer,
                "api-tests".to_owned(),
                std::env::temp_dir().join("herd-api-tests"),
            )),
            pool,
            import_from_private_addresses: false,
            billing: None,
        };
        Harness { db, state }
    }

    async fn conn(&self) -> AsyncPgConnection {
        self.db.connect().await
    }

    /// A token of the customer most tests act as.
    async fn customer(&self) -> String {
        self.token("customer@example.com", Role::Customer).await
    }

    async fn token(&self, email: &str, role: Role) -> String {
        let mut conn = self.conn().await;
        let account = herd_db::accounts::ensure_account(&mut conn, email, role)
            .await
            .expect("account");
        herd_db::accounts::issue_token(&mut conn, account.id, "test")
            .await
            .expect("token")
            .secret
    }

    /// How many rows `from` holds: a table, with a `WHERE` clause where the
    /// test counts only some.
    async fn rows(&self, from: &str) -> i64 {
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            count: i64,
        }
        diesel::sql_query(format!("SELECT count(*) AS count FROM {from}"))
            .get_result::<Count>(&mut self.conn().await)
            .await
            .expect("count")
            .count
    }

    async fn stop(self) {
        drop(self.state);
        self.db.drop_database().await;
    }
}

/// The app exactly as `herd serve` configures it. Readiness is not under
/// test, so its Kubernetes client points at a closed loopback port.
async fn app(
    state: herd_api::ApiState,
) -> impl Service<
    actix_http::Request,
    Response = ServiceResponse<impl MessageBody>,
    Error = actix_web::Error,
> {
    let kubernetes = kube::Client::try_from(kube::Config::new(
        "https://127.0.0.1:1".parse().expect("URL"),
    ))
    .expect("kube client");
    let probes = herd_api::Probes {
        database: state.pool.clone(),
        schema: herd_db::SchemaStatus::default(),
        kubernetes,
    };
    test::init_service(App::new().configure(herd_api::configure(probes, state))).await
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Value,
}

impl Answer {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or("")
    }

    fn assert_problem(&self, status: StatusCode, code: &str) {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "body: {}",
            self.body
        );
        assert_eq!(
            self.headers.get(header::CONTENT_TYPE).unwrap(),
            "application/problem+json"
        );
    }
}

async fn call<S, B>(app: &S, request: test::TestRequest) -> Answer
where
    S: Service<actix_http::Request, Response = ServiceResponse<B>, Error = actix_web::Error>,
    B: MessageBody,
{
    let response = test::call_service(app, request.to_request()).await;
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = test::read_body(response).await;
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| panic!("{status}: not JSON: {}", String::from_utf8_lossy(&bytes)))
    };
    Answer {
        status,
        headers,
        body,
    }
}

fn get(path: &str, token: &str) -> test::TestRequest {
    test::TestRequest::get()
        .uri(path)
        .insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
}

fn delete(path: &str, token: &str) -> test::TestRequest {
    test::TestRequest::delete()
        .uri(path)
        .insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
}

fn order(token: &str, body: impl Into<actix_web::web::Bytes>) -> test::TestRequest {
    test::TestRequest::post()
        .uri("/api/v1/instances")
        .insert_header((header::AUTHORIZATION, format!("Bearer {token}")))
        .insert_header((header::CONTENT_TYPE, "application/json"))
        .set_payload(body)
}

fn order_of(domain: &str) -> String {
    json!({ "domain": domain, "plan": "small", "owner_email": "owner@example.com" }).to_string()
}

fn id(value: &Value) -> Uuid {
    value["id"].as_str().expect("id").parse().expect("uuid")
}

fn step_names(operation: &Value) -> Vec<&str> {
    operation["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|step| step["name"].as_str().unwrap())
        .collect()
}

#[actix_web::test]
async fn requests_without_a_valid_token_are_refused() {
    let harness = Harness::start().await;
    let app = app(harness.state.clone()).await;
    for request in [
        test::TestRequest::get().uri("/api/v1/plans"),
        test::TestRequest::get().uri("/api/v1/instances"),
        test::TestRequest::post()
            .uri("/api/v1/instances")
            .set_payload(order_of("example.social")),
        get("/api/v1/instances", "herd_0000000000000000"),
        get("/api/v1/instances", "not-even-a-herd-token"),
        test::TestRequest::get()
            .uri("/api/v1/plans")
            .insert_header((header::AUTHORIZATION, "Basic b3duZXI6c2VjcmV0")),
    ] {
        let answer = call(&app, request).await;
        answer.assert_problem(StatusCode::UNAUTHORIZED, "unauthenticated");
        let challenge = answer.headers.get(header::WWW_AUTHENTICATE).unwrap();
        assert!(challenge.to_str().unwrap().starts_with("Bearer"));
    }
    assert_eq!(harness.rows("instances").await, 0);
    harness.stop().await;
}

#[actix_web::test]
async fn plans_are_listed_with_price_ids_for_operators_only() {
    let harness = Harness::start().await;
    let small = herd_core::plan::starter_plans().remove(0);
    herd_db::plans::upsert_plan(&mut harness.conn().await, &small, Some("price_small"))
        .await
        .unwrap();
    let customer = harness.customer().await;
    let operator = harness.token("operator@example.com", Role::Operator).await;
    let app = app(harness.state.clone()).await;

    let answer = call(&app, get("/api/v1/plans", &customer)).await;
    assert_eq!(answer.status, StatusCode::OK);
    let plans = answer.body["plans"].as_array().unwrap();
    let names: Vec<&str> = plans.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["large", "medium", "small"]);
    let small = &plans[2];
    assert_eq!(small["web"]["replicas"], 1);
    assert_eq!(small["streaming"]["replicas"], 1);
    assert_eq!(small["sidekiq"][1]["name"], "scheduler");
    assert_eq!(small["sidekiq"][1]["max_replicas"], 1);
    assert_eq!(
        small["sidekiq"][0]["queues"][0],
        json!({"name": "default", "weight": 8})
    );
    assert!(small["web"]["resources"]["cpu_millis"].as_u64().unwrap() > 0);
    assert_eq!(small["database_connection_limit"], 50);
    assert!(small["media_storage_gib"].as_u64().unwrap() > 0);
    assert!(plans.iter().all(|p| p.get("stripe_price_id").is_none()));

    let answer = call(&app, get("/api/v1/plans", &operator)).await;
    assert_eq!(answer.body["plans"][2]["stripe_price_id"], "price_small");
    harness.stop().await;
}

#[actix_web::test]
async fn an_order_creates_instance_job_operation_event_and_audit_entry() {
    let harness = Harness::start().await;
    let token = harness.customer().await;
    let app = app(harness.state.clone()).await;

    let body = json!({
        "domain": "Example.Social",
        "plan": "small",
        "owner_email": "Owner@Example.com",
        "web_domain": "mastodon.example.social",
        "version": "v4.4.0",
    });
    let answer = call(&app, order(&token, body.to_string())).await;
    assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
    let instance = &answer.body["instance"];
    let operation = &answer.body["operation"];
    assert_eq!(instance["state"], "pending");
    assert_eq!(instance["domain"], "example.social");
    assert_eq!(instance["web_domain"], "mastodon.example.social");
    assert_eq!(instance["version"], "4.4.0");
    assert_eq!(instance["plan"], "small");
    assert_eq!(operation["kind"], "provision");
    assert_eq!(operation["state"], "pending");
    assert_eq!(operation["progress"], 0);
    assert_eq!(
        step_names(operation),
        [
            "place",
            "secrets",
            "tenant_database",
            "tenant_bucket",
            "apply",
            "ready"
        ]
    );
    let instance_id = id(instance);
    let operation_id = id(operation);
    assert_eq!(operation["instance_id"], instance_id.to_string());

    let mut conn = harness.conn().await;
    let stored = herd_db::instances::load_instance(&mut conn, instance_id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.owner_email, "Owner@example.com");
    let job_id = herd_db::operations::load_operation(&mut conn, operation_id)
        .await
        .unwrap()
        .unwrap()
        .job_id
        .expect("the operation names its job");
    let job = herd_db::jobs::find(&mut conn, job_id.into())
        .await
        .unwrap()
        .expect("job");
    assert_eq!(job.kind, "provision_instance");
    assert_eq!(job.dedupe_key.unwrap(), format!("provision:{instance_id}"));
    assert_eq!(
        job.payload,
        json!({ "instance_id": instance_id, "operation_id": operation_id })
    );
    assert_eq!(
        harness
            .rows("outbox WHERE topic = 'instance.created'")
            .await,
        1
    );
    let history = herd_db::audit::history(&mut conn, "instance", &instance_id.to_string())
        .await
        .unwrap();
    let actions: Vec<&str> = history.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["instance.create"]);

    let shown = call(
        &app,
        get(&format!("/api/v1/instances/{instance_id}"), &token),
    )
    .await;
    assert_eq!(shown.status, StatusCode::OK);
    assert_eq!(&shown.body, instance);
    let followed = call(
        &app,
        get(&format!("/api/v1/operations/{operation_id}"), &token),
    )
    .await;
    assert_eq!(followed.status, StatusCode::OK);
    assert_eq!(followed.body["steps"], operation["steps"]);
    let listed = call(&app, get("/api/v1/instances", &token)).await;
    assert_eq!(listed.body["instances"][0]["id"], instance_id.to_string());

    let defaulted = call(&app, order(&token, order_of("other.example"))).await;
    assert_eq!(defaulted.status, StatusCode::ACCEPTED);
    assert_eq!(
        defaulted.body["instance"]["version"],
        herd_core::version::DEFAULT_VERSION.to_string()
    );
    assert_eq!(defaulted.body["instance"]["web_domain"], "other.example");
    harness.stop().await;
}

#[actix_web::test]
async fn an_idempotency_key_replays_the_first_answer() {
    let harness = Harness::start().await;
    let token = harness.customer().await;
    let other = harness.token("other@example.com", Role::Customer).await;
    let app = app(harness.state.clone()).await;
    let keyed = |token: &str, body: String| {
        order(token, body).insert_header(("Idempotency-Key", "order-1"))
    };

    let first = call(&app, keyed(&token, order_of("example.social"))).await;
    assert_eq!(first.status, StatusCode::ACCEPTED);
    let again = call(&app, keyed(&token, order_of("example.social"))).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body, first.body);
    assert_eq!(harness.rows("instances").await, 1);
    assert_eq!(harness.rows("jobs").await, 1);
    assert_eq!(harness.rows("audit_log").await, 1);

    let changed = call(&app, keyed(&token, order_of("changed.example"))).await;
    changed.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused");

    // Keys belong to an account: another one's key of the same name is unrelated.
    let theirs = call(&app, keyed(&other, order_of("theirs.example"))).await;
    assert_eq!(theirs.status, StatusCode::ACCEPTED);

    let bad_key = call(
        &app,
        order(&token, order_of("bad-key.example")).insert_header(("Idempotency-Key", "a b")),
    )
    .await;
    bad_key.assert_problem(StatusCode::BAD_REQUEST, "invalid_idempotency_key");
    assert_eq!(harness.rows("instances").await, 2);
    harness.stop().await;
}

#[actix_web::test]
async fn concurrent_retries_with_one_key_create_one_instance() {
    let harness = Harness::start().await;
    let token = harness.customer().await;
    let app = app(harness.state.clone()).await;

    let answers = futures::future::join_all((0..6).map(|_| {
        call(
            &app,
            order(&token, order_of("race.example")).insert_header(("Idempotency-Key", "race")),
        )
    }))
    .await;
    let first = &answers[0];
    for answer in &answers {
        assert_eq!(answer.status, StatusCode::ACCEPTED, "{}", answer.body);
        assert_eq!(answer.body, first.body);
    }
    assert_eq!(harness.rows("instances").await, 1);
    assert_eq!(harness.rows("operations").await, 1);
    harness.stop().await;
}

#[actix_web::test]
async fn invalid_orders_are_refused_with_stable_codes() {
    let harness = Harness::start().await;
    let token = harness.customer().await;
    let app = app(harness.state.clone()).await;

    let long = format!("{}.example", vec!["a".repeat(60); 5].join("."));
    assert!(long.len() > 300);
    for domain in [
        "a..b",
        "localhost",
        &long,
        "-x.example",
        "10.0.0.1",
        "[::1]",
        "",
    ] {
        let answer = call(&app, order(&token, order_of(domain))).await;
        answer.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "invalid_domain");
        assert_eq!(answer.body["field"], "domain", "{domain}");
        assert!(!answer.body["detail"].as_str().unwrap().is_empty());
    }
    let field = |name: &str, value: &str| {
        let mut body =
            json!({ "domain": "fine.example", "plan": "small", "owner_email": "o@example.com" });
        body[name] = json!(value);
        body.to_string()
    };
    for (name, value, code) in [
        ("web_domain", "bad_name.example", "invalid_domain"),
        ("plan", "gigantic", "unknown_plan"),
        ("version", "latest", "invalid_version"),
        ("version", "4.2.9", "invalid_version"),
        ("owner_email", "owner", "invalid_email"),
        ("owner_email", "owner@localhost", "invalid_email"),
    ] {
        let answer = call(&app, order(&token, field(name, value))).await;
        answer.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, code);
        assert_eq!(answer.body["field"], name);
    }
    for malformed in [
        "{".to_owned(),
        "".to_owned(),
        "[]".to_owned(),
        json!({ "domain": 5, "plan": "small", "owner_email": "o@example.com" }).to_string(),
        json!({ "plan": "small", "owner_email": "o@example.com" }).to_string(),
        json!({ "domain": "a.example", "plan": "small", "owner_email": "o@example.com", "owner": "x" })
            .to_string(),
    ] {
        let answer = call(&app, order(&token, malformed.clone())).await;
        answer.assert_problem(StatusCode::BAD_REQUEST, "malformed_request");
    }
    let huge =
        json!({ "domain": "a".repeat(70 * 1024), "plan": "small", "owner_email": "o@example.com" });
    call(&app, order(&token, huge.to_string()))
        .await
        .assert_problem(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large");
    assert_eq!(harness.rows("instances").await, 0);
    harness.stop().await;
}

#[actix_web::test]
async fn hosted_and_reserved_domains_are_unavailable() {
    let harness = Harness::start().await;
    let token = harness.customer().await;
    let other = harness.token("other@example.com", Role::Customer).await;
    herd_db::instances::reserve_domain(&mut harness.conn().await, "herd.example", "ours")
        .await
        .unwrap();
    let app = app(harness.state.clone()).await;

    assert_eq!(
        call(&app, order(&token, order_of("example.social")))
            .await
            .status,
        StatusCode::ACCEPTED
    );
    for (who, domain) in [
        (&token, "example.social"),
        (&other, "EXAMPLE.social."),
        (&token, "herd.example"),
        (&token, "mastodon.herd.example"),
    ] {
        call(&app, order(who, order_of(domain)))
            .await
            .assert_problem(StatusCode::CONFLICT, "domain_unavailable");
    }
    let reserved_web_domain = json!({
        "domain": "mine.example", "web_domain": "www.herd.example",
        "plan": "small", "owner_email": "o@example.com",
    });
    call(&app, order(&token, reserved_web_domain.to_string()))
        .await
        .assert_problem(StatusCode::CONFLICT, "domain_unavailable");
    assert_eq!(harness.rows("instances").await, 1);
    harness.stop().await;
}

#[actix_web::test]
async fn customers_see_only_their_own_and_operators_see_all() {
    let harness = Harness::start().await;
    let alice = harness.token("alice@example.com", Role::Customer).await;
    let bob = harness.token("bob@example.com", Role::Customer).await;
    let operator = harness.token("operator@example.com", Role::Operator).await;
    let app = app(harness.state.clone()).await;

    let a = call(&app, order(&alice, order_of("alice.example")))
        .await
        .body;
    let b = call(&app, order(&bob, order_of("bob.example"))).await.body;
    let b_instance = id(&b["instance"]);
    let b_operation = id(&b["operation"]);

    for request in [
        get(&format!("/api/v1/instances/{b_instance}"), &alice),
        delete(&format!("/api/v1/instances/{b_instance}"), &alice),
        get(&format!("/api/v1/operations/{b_operation}"), &alice),
        get(&format!("/api/v1/instances/{}", Uuid::now_v7()), &alice),
        get(&format!("/api/v1/operations/{}", Uuid::now_v7()), &alice),
    ] {
        call(&app, request)
            .await
            .assert_problem(StatusCode::NOT_FOUND, "not_found");
    }
    let untouched = call(&app, get(&format!("/api/v1/instances/{b_instance}"), &bob)).await;
    assert_eq!(untouched.body["state"], "pending");

    let ids = |answer: Answer| -> Vec<String> {
        answer.body["instances"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let a_id = a["instance"]["id"].as_str().unwrap().to_owned();
    let b_id = b_instance.to_string();
    assert_eq!(
        ids(call(&app, get("/api/v1/instances", &alice)).await),
        [a_id.as_str()]
    );
    assert_eq!(
        ids(call(&app, get("/api/v1/instances", &bob)).await),
        [b_id.as_str()]
    );
    let mut all = ids(call(&app, get("/api/v1/instances", &operator)).await);
    all.sort();
    let mut expected = vec![a_id, b_id];
    expected.sort();
    assert_eq!(all, expected);
    let seen = call(
        &app,
        get(&format!("/api/v1/operations/{b_operation}"), &operator),
    )
    .await;
    assert_eq!(seen.status, StatusCode::OK);
    harness.stop().await;
}

#[actix_web::test]
async fn deletion_is_accepted_once_and_repeats_are_harmless() {
    let harness = Harness::start().await;
    let token = harness.customer().await;
    let app = app(harness.state.clone()).await;
    let created = call(&app, order(&token, order_of("example.social")))
        .await
        .body;
    let instance_id = id(&created["instance"]);
    let path = format!("/api/v1/instances/{instance_id}");

    let first = call(&app, delete(&path, &token)).await;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    assert_eq!(first.body["instance"]["state"], "deleting");
    assert_eq!(first.body["operation"]["kind"], "delete");
    assert_eq!(
        step_names(&first.body["operation"]),
        ["subscription", "workloads", "tenant_data", "finish"]
    );

    let again = call(&app, delete(&path, &token)).await;
    assert_eq!(again.status, StatusCode::ACCEPTED);
    assert_eq!(again.body["operation"]["id"], first.body["operation"]["id"]);
    assert_eq!(harness.rows("jobs WHERE kind = 'delete_instance'").await, 1);
    assert_eq!(harness.rows("operations WHERE kind = 'delete'").await, 1);
    assert_eq!(
        harness
            .rows("outbox WHERE topic = 'instance.deletion_requested'")
            .await,
        1
    );
    let mut conn = harness.conn().await;
    let history = herd_db::audit::history(&mut conn, "instance", &instance_id.to_string())
        .await
        .unwrap();
    let actions: Vec<&str> = history.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(actions, ["instance.create", "instance.delete"]);
    assert_eq!(history[1].actor, "account");

    herd_db::instances::transition(&mut conn, instance_id, &LifecycleEvent::CleanupFinished)
        .await
        .unwrap();
    call(&app, delete(&path, &token))
        .await
        .assert_problem(StatusCode::GONE, "gone");
    let listed = call(&app, get("/api/v1/instances", &token)).await;
    assert_eq!(listed.body["instances"], json!([]));
    // A deleted instance frees its domain.
    let reordered = call(&app, order(&token, order_of("example.social"))).await;
    assert_eq!(reordered.status, StatusCode::ACCEPTED);
    harness.stop().await;
}

#[actix_web::test]
async fn routing_errors_are_problems() {
    let harness = Harness::start().await;
    let token = harness.customer().await;
    let app = app(harness.state.clone()).await;

    call(&app, get("/api/v1/nothing-here", &token))
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");
    call(&app, get("/api/v1/instances/not-a-uuid", &token))
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");
    call(&app, delete("/api/v1/operations/not-a-uuid", &token))
        .await
        .assert_problem(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    let put = call(
        &app,
        test::TestRequest::put()
            .uri("/api/v1/instances")
            .insert_header((header::AUTHORIZATION, format!("Bearer {token}"))),
    )
    .await;
    put.assert_problem(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    assert_eq!(put.headers.get(header::ALLOW).unwrap(), "GET, POST");
    harness.stop().await;
}

#[actix_web::test]
async fn the_openapi_document_lists_every_path() {
    let harness = Harness::start().await;
    let app = app(harness.state.clone()).await;
    let answer = call(&app, test::TestRequest::get().uri("/openapi.json")).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(answer.body["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths: Vec<&str> = answer.body["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for path in [
        "/api/v1/plans",
        "/api/v1/instances",
        "/api/v1/instances/{id}",
        "/api/v1/operations/{id}",
        "/openapi.json",
    ] {
        assert!(paths.contains(&path), "{path} missing from {paths:?}");
    }
    assert_eq!(
        answer.body["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    harness.stop().await;
}
