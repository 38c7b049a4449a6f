//! The durable job queue and the outbox against a real PostgreSQL server.
//! Each test works in a database of its own, migrated from scratch.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use diesel::sql_types;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use herd_db::jobs::{self, JobId, JobState, NewJob};
use herd_db::{DbError, outbox};
use herd_e2e::TestDatabase;
use serde_json::json;

fn job<'a>(kind: &'a str, dedupe_key: Option<&'a str>, max_attempts: i32) -> NewJob<'a> {
    NewJob {
        kind,
        payload: json!({"kind": kind}),
        dedupe_key,
        max_attempts,
    }
}

async fn stored(conn: &mut AsyncPgConnection, id: JobId) -> jobs::Job {
    jobs::find(conn, id)
        .await
        .expect("find job")
        .expect("job exists")
}

const LEASE: Duration = Duration::from_secs(60);

/// Whether `worker` still held `job` and renewed its lease.
async fn renew(conn: &mut AsyncPgConnection, job: JobId, worker: &str, lease: Duration) -> bool {
    jobs::heartbeat(conn, &[(job, worker.to_owned())], lease)
        .await
        .expect("heartbeat")
        .contains(&job)
}

/// What `worker` is handed when it asks for a job of `kind` under the usual lease.
async fn claim(conn: &mut AsyncPgConnection, worker: &str, kind: &str) -> Option<jobs::ClaimedJob> {
    jobs::claim(conn, worker, &[kind], LEASE)
        .await
        .expect("claim")
}

/// Fails the job as "worker" with `backoff`, noting each attempt it is asked about.
async fn fail_noting_attempts(
    conn: &mut AsyncPgConnection,
    id: JobId,
    error: &str,
    attempts_seen: &Arc<Mutex<Vec<u32>>>,
    backoff: impl FnOnce(u32) -> Duration + Send + 'static,
) -> JobState {
    let seen = attempts_seen.clone();
    jobs::fail(conn, id, "worker", error, move |attempt| {
        seen.lock().unwrap().push(attempt);
        Some(backoff(attempt))
    })
    .await
    .expect("fail")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_workers_claim_each_job_exactly_once() {
    let db = TestDatabase::create("herd_jobs").await;
    let mut conn = db.connect().await;
    let mut enqueued = BTreeSet::new();
    for n in 0..200 {
        let id = jobs::enqueue(
            &mut conn,
            NewJob {
                kind: "test.concurrent",
                payload: json!({"n": n}),
                dedupe_key: None,
                max_attempts: 3,
            },
        )
        .await
        .expect("enqueue");
        enqueued.insert(id);
    }
    // A job of another kind must stay untouched by these workers.
    let other = jobs::enqueue(&mut conn, job("test.other", None, 3))
        .await
        .expect("enqueue other");

    let mut workers = Vec::new();
    for w in 0..4 {
        let mut conn = db.connect().await;
        workers.push(tokio::spawn(async move {
            let worker = format!("worker-{w}");
            let mut claimed = Vec::new();
            while let Some(job) = jobs::claim(&mut conn, &worker, &["test.concurrent"], LEASE)
                .await
                .expect("claim")
            {
                assert_eq!(job.kind, "test.concurrent");
                assert_eq!(job.attempts, 1);
                jobs::complete(&mut conn, job.id, &worker)
                    .await
                    .expect("complete");
                claimed.push(job.id);
            }
            claimed
        }));
    }
    let mut per_worker = Vec::new();
    let mut all = Vec::new();
    for worker in workers {
        let claimed = worker.await.expect("worker task");
        per_worker.push(claimed.len());
        all.extend(claimed);
    }
    println!("jobs claimed per worker: {per_worker:?}");

    assert_eq!(all.len(), 200, "claims in total");
    let distinct: BTreeSet<JobId> = all.into_iter().collect();
    assert_eq!(distinct, enqueued, "every job claimed exactly once");
    assert!(
        per_worker.iter().filter(|&&n| n > 0).count() > 1,
        "the workers did not run concurrently: {per_worker:?}"
    );
    for id in &enqueued {
        let job = stored(&mut conn, *id).await;
        assert_eq!(job.state, JobState::Succeeded);
        assert_eq!(job.attempts, 1);
        assert!(job.finished_at.is_some() && job.locked_by.is_none());
    }
    assert_eq!(stored(&mut conn, other).await.state, JobState::Queued);

    drop(conn);
    db.drop_database().await;
}

#[tokio::test]
async fn an_expired_lease_lets_another_worker_take_over() {
    let db = TestDatabase::create("herd_jobs").await;
    let mut first = db.connect().await;
    let mut second = db.connect().await;
    let id = jobs::enqueue(&mut first, job("test.lease", None, 5))
        .await
        .expect("enqueue");

    let short = Duration::from_millis(300);
    let claimed = jobs::claim(&mut first, "worker-a", &["test.lease"], short)
        .await
        .expect("claim")
        .expect("a job is due");
    assert_eq!((claimed.id, claimed.attempts), (id, 1));
    assert!(
        claim(&mut second, "worker-b", "test.lease").await.is_none(),
        "a job under a live lease was handed out again"
    );
    assert!(
        renew(&mut first, id, "worker-a", short).await,
        "the holder could not renew its lease"
    );

    // worker-a "crashes": it stops renewing and the lease runs out.
    tokio::time::sleep(short + Duration::from_millis(200)).await;
    let taken = claim(&mut second, "worker-b", "test.lease")
        .await
        .expect("the expired job is claimable again");
    assert_eq!((taken.id, taken.attempts), (id, 2));

    assert!(
        !renew(&mut first, id, "worker-a", LEASE).await,
        "the old holder renewed a lease it lost"
    );
    let err = jobs::complete(&mut first, id, "worker-a")
        .await
        .expect_err("the old holder completed a job it lost");
    assert!(
        matches!(&err, DbError::LeaseLost { job, worker } if *job == id.0 && worker == "worker-a"),
        "{err}"
    );
    let err = jobs::fail(&mut first, id, "worker-a", "late", |_| Some(Duration::ZERO))
        .await
        .expect_err("the old holder failed a job it lost");
    assert!(matches!(err, DbError::LeaseLost { .. }), "{err}");

    let job = stored(&mut second, id).await;
    assert_eq!(job.state, JobState::Running);
    assert_eq!(job.locked_by.as_deref(), Some("worker-b"));
    // One renewal for several holders renews only the pairs that hold.
    let renewed = jobs::heartbeat(
        &mut second,
        &[(id, "worker-a".to_owned()), (id, "worker-b".to_owned())],
        LEASE,
    )
    .await
    .expect("heartbeat");
    assert_eq!(renewed, [id].into());
    jobs::complete(&mut second, id, "worker-b")
        .await
        .expect("the new holder completes");
    let job = stored(&mut second, id).await;
    assert_eq!((job.state, job.attempts), (JobState::Succeeded, 2));

    drop((first, second));
    db.drop_database().await;
}

#[tokio::test]
async fn a_worker_dying_in_the_final_attempt_fails_the_job() {
    let db = TestDatabase::create("herd_jobs").await;
    let mut conn = db.connect().await;
    let id = jobs::enqueue(&mut conn, job("test.final", None, 1))
        .await
        .expect("enqueue");
    jobs::claim(
        &mut conn,
        "worker-a",
        &["test.final"],
        Duration::from_millis(100),
    )
    .await
    .expect("claim")
    .expect("a job is due");
    tokio::time::sleep(Duration::from_millis(300)).await;

    assert!(
        claim(&mut conn, "worker-b", "test.final").await.is_none(),
        "a job was run beyond its max_attempts"
    );
    let job = stored(&mut conn, id).await;
    assert_eq!((job.state, job.attempts), (JobState::Failed, 1));
    assert!(job.finished_at.is_some());
    assert!(job.last_error.expect("an error").contains("lease expired"));

    drop(conn);
    db.drop_database().await;
}

#[tokio::test]
async fn failures_back_off_and_the_last_one_fails_the_job() {
    let db = TestDatabase::create("herd_jobs").await;
    let mut conn = db.connect().await;
    let id = jobs::enqueue(&mut conn, job("test.fail", None, 3))
        .await
        .expect("enqueue");
    let attempts_seen = Arc::new(Mutex::new(Vec::new()));

    // Attempt 1 fails with no wait: the job is due again at once.
    let claimed = claim(&mut conn, "worker", "test.fail").await.expect("due");
    assert_eq!(claimed.attempts, 1);
    let state = fail_noting_attempts(&mut conn, id, "first failure", &attempts_seen, |_| {
        Duration::ZERO
    })
    .await;
    assert_eq!(state, JobState::Queued);
    let job = stored(&mut conn, id).await;
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.last_error.as_deref(), Some("first failure"));
    assert!(job.locked_by.is_none() && job.locked_until.is_none());

    // Attempt 2 fails with the real backoff: the job waits.
    let claimed = claim(&mut conn, "worker", "test.fail")
        .await
        .expect("due again after a zero backoff");
    assert_eq!(claimed.attempts, 2);
    let backoff = herd_db::Backoff {
        base: Duration::from_secs(30 * 60),
        cap: Duration::from_secs(6 * 3600),
    };
    let expected_wait = backoff.delay(2, id.jitter_seed());
    let state = fail_noting_attempts(
        &mut conn,
        id,
        "second failure",
        &attempts_seen,
        move |attempt| backoff.delay(attempt, id.jitter_seed()),
    )
    .await;
    assert_eq!(state, JobState::Queued);
    let job = stored(&mut conn, id).await;
    // Both come from the same statement's clock.
    let waited = (job.run_after - job.updated_at)
        .to_std()
        .expect("run_after in the future");
    assert!(
        waited.abs_diff(expected_wait) < Duration::from_millis(1),
        "run_after is {waited:?} ahead, expected {expected_wait:?}"
    );
    assert!(expected_wait >= Duration::from_secs(30 * 60));
    assert!(
        claim(&mut conn, "worker", "test.fail").await.is_none(),
        "a job was claimed before its backoff ended"
    );

    // Time passes.
    diesel::sql_query("UPDATE jobs SET run_after = now() WHERE id = $1")
        .bind::<sql_types::Uuid, _>(id.0)
        .execute(&mut conn)
        .await
        .expect("move run_after");
    let claimed = claim(&mut conn, "worker", "test.fail")
        .await
        .expect("due after the backoff");
    assert_eq!(claimed.attempts, 3);
    let state = fail_noting_attempts(&mut conn, id, "third failure", &attempts_seen, |_| {
        Duration::ZERO
    })
    .await;
    assert_eq!(state, JobState::Failed);
    assert_eq!(
        *attempts_seen.lock().unwrap(),
        [1, 2],
        "backoff is asked for each retry and not for the final failure"
    );
    let job = stored(&mut conn, id).await;
    assert_eq!((job.state, job.attempts), (JobState::Failed, 3));
    assert_eq!(job.last_error.as_deref(), Some("third failure"));
    assert!(job.finished_at.is_some() && job.locked_by.is_none());
    assert!(
        claim(&mut conn, "worker", "test.fail").await.is_none(),
        "a failed job was claimed"
    );

    drop(conn);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dedupe_key_makes_double_enqueue_one_job() {
    let db = TestDatabase::create("herd_jobs").await;
    let mut conn = db.connect().await;

    let first = jobs::enqueue(
        &mut conn,
        job("test.dedupe", Some("provision:example.social"), 3),
    )
    .await
    .expect("enqueue");
    let second = jobs::enqueue(
        &mut conn,
        job("test.dedupe", Some("provision:example.social"), 3),
    )
    .await
    .expect("enqueue again");
    assert_eq!(first, second);

    // Racing enqueues from two connections also agree on one job.
    let (mut a, mut b) = (db.connect().await, db.connect().await);
    let (x, y) = tokio::join!(
        jobs::enqueue(&mut a, job("test.dedupe", Some("export:example.social"), 3)),
        jobs::enqueue(&mut b, job("test.dedupe", Some("export:example.social"), 3)),
    );
    assert_eq!(x.expect("enqueue a"), y.expect("enqueue b"));

    // Without a key every enqueue is new work.
    let plain_a = jobs::enqueue(&mut conn, job("test.dedupe", None, 3))
        .await
        .expect("enqueue");
    let plain_b = jobs::enqueue(&mut conn, job("test.dedupe", None, 3))
        .await
        .expect("enqueue");
    assert_ne!(plain_a, plain_b);

    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = sql_types::BigInt)]
        count: i64,
    }
    let count = diesel::sql_query("SELECT count(*) AS count FROM jobs")
        .get_result::<Count>(&mut conn)
        .await
        .expect("count")
        .count;
    assert_eq!(count, 4, "two keyed jobs and two plain ones");

    drop((conn, a, b));
    db.drop_database().await;
}

#[tokio::test]
async fn completed_steps_survive_a_crash_and_are_listed() {
    let db = TestDatabase::create("herd_jobs").await;
    let mut conn = db.connect().await;
    let id = jobs::enqueue(&mut conn, job("test.steps", None, 3))
        .await
        .expect("enqueue");
    let other = jobs::enqueue(&mut conn, job("test.steps", None, 3))
        .await
        .expect("enqueue");

    let short = Duration::from_millis(200);
    let claimed = jobs::claim(&mut conn, "worker-a", &["test.steps"], short)
        .await
        .expect("claim")
        .expect("due");
    assert_eq!(
        claimed.id, id,
        "jobs are claimed in the order they became due"
    );
    assert!(
        jobs::record_step(&mut conn, id, "database", json!({"role": "tenant_1"}))
            .await
            .expect("record")
    );
    assert!(
        jobs::record_step(&mut conn, id, "bucket", json!({"bucket": "tenant-1"}))
            .await
            .expect("record")
    );
    assert!(
        jobs::record_step(&mut conn, other, "database", json!({"role": "tenant_2"}))
            .await
            .expect("record")
    );

    // worker-a dies; worker-b resumes the job and finds what is done.
    tokio::time::sleep(short + Duration::from_millis(200)).await;
    let mut resumed = db.connect().await;
    let again = claim(&mut resumed, "worker-b", "test.steps")
        .await
        .expect("the job is claimable again");
    assert_eq!((again.id, again.attempts), (id, 2));
    let steps = jobs::completed_steps(&mut resumed, id)
        .await
        .expect("steps");
    let listed: Vec<(&str, &serde_json::Value)> =
        steps.iter().map(|s| (s.step.as_str(), &s.output)).collect();
    assert_eq!(
        listed,
        [
            ("database", &json!({"role": "tenant_1"})),
            ("bucket", &json!({"bucket": "tenant-1"})),
        ]
    );

    // Recording a step again keeps the first output.
    assert!(
        !jobs::record_step(&mut resumed, id, "database", json!({"role": "other"}))
            .await
            .expect("record again")
    );
    let steps = jobs::completed_steps(&mut resumed, id)
        .await
        .expect("steps");
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0].output, json!({"role": "tenant_1"}));

    assert!(
        jobs::record_step(&mut resumed, id, "secret", json!(null))
            .await
            .expect("record")
    );
    jobs::complete(&mut resumed, id, "worker-b")
        .await
        .expect("complete");
    let names: Vec<String> = jobs::completed_steps(&mut resumed, id)
        .await
        .expect("steps")
        .into_iter()
        .map(|s| s.step)
        .collect();
    assert_eq!(names, ["database", "bucket", "secret"]);

    drop((conn, resumed));
    db.drop_database().await;
}

#[tokio::test]
async fn outbox_messages_exist_only_when_their_transaction_commits() {
    let db = TestDatabase::create("herd_jobs").await;
    let mut conn = db.connect().await;

    let committed = conn
        .transaction::<_, DbError, _>(async |conn| {
            let job = jobs::enqueue(conn, job("test.outbox", None, 3)).await?;
            outbox::publish(conn, "job.enqueued", json!({"job": job.0})).await
        })
        .await
        .expect("committed transaction");

    let rolled_back = conn
        .transaction::<(), DbError, _>(async |conn| {
            jobs::enqueue(conn, job("test.outbox", Some("rolled-back"), 3)).await?;
            outbox::publish(conn, "job.enqueued", json!({"rolled": "back"})).await?;
            Err(DbError::Query(diesel::result::Error::RollbackTransaction))
        })
        .await;
    assert!(rolled_back.is_err());

    let batch = conn
        .transaction::<_, DbError, _>(async |conn| outbox::next_batch(conn, 100).await)
        .await
        .expect("batch");
    let ids: Vec<i64> = batch.iter().map(|m| m.id).collect();
    assert_eq!(ids, [committed], "only the committed message is there");
    assert_eq!(batch[0].topic, "job.enqueued");
    assert!(batch[0].payload.get("job").is_some());

    let err = outbox::next_batch(&mut conn, 100)
        .await
        .expect_err("next_batch outside a transaction");
    assert!(matches!(err, DbError::TransactionRequired(_)), "{err}");

    drop(conn);
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_deliver_each_message_exactly_once() {
    let db = TestDatabase::create("herd_jobs").await;
    let mut conn = db.connect().await;
    let mut published = BTreeSet::new();
    for n in 0..100 {
        published.insert(
            outbox::publish(&mut conn, "test.relay", json!({"n": n}))
                .await
                .expect("publish"),
        );
    }

    let delivered: Arc<Mutex<BTreeMap<i64, Vec<&'static str>>>> = Arc::default();
    let mut relays = Vec::new();
    for relay in ["relay-a", "relay-b"] {
        let mut conn = db.connect().await;
        let delivered = delivered.clone();
        relays.push(tokio::spawn(async move {
            let mut batches = 0;
            loop {
                let delivered = delivered.clone();
                let count = conn
                    .transaction::<_, DbError, _>(async |conn| {
                        let batch = outbox::next_batch(conn, 7).await?;
                        // Delivery takes a while, so the relays overlap.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        for message in &batch {
                            delivered
                                .lock()
                                .unwrap()
                                .entry(message.id)
                                .or_default()
                                .push(relay);
                        }
                        let ids: Vec<i64> = batch.iter().map(|m| m.id).collect();
                        assert_eq!(outbox::mark_delivered(conn, &ids).await?, ids.len());
                        Ok(batch.len())
                    })
                    .await
                    .expect("relay transaction");
                if count == 0 {
                    return batches;
                }
                batches += 1;
            }
        }));
    }
    let mut batches = Vec::new();
    for relay in relays {
        batches.push(relay.await.expect("relay task"));
    }
    println!("batches per relay: {batches:?}");

    let delivered = delivered.lock().unwrap().clone();
    let twice: Vec<_> = delivered.iter().filter(|(_, by)| by.len() > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");
    assert_eq!(
        delivered.keys().copied().collect::<BTreeSet<_>>(),
        published,
        "every message delivered"
    );
    assert!(
        batches.iter().all(|&n| n > 0),
        "the relays did not run concurrently: {batches:?}"
    );
    let leftover = conn
        .transaction::<_, DbError, _>(async |conn| outbox::next_batch(conn, 100).await)
        .await
        .expect("batch");
    assert!(
        leftover.is_empty(),
        "undelivered after the relays: {leftover:?}"
    );

    drop(conn);
    db.drop_database().await;
}
