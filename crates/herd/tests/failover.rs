//! Two `herd serve` processes on one installation: one holds the cluster's
//! reconciler lease, and whichever dies, the other takes over and instances
//! keep being provisioned.

mod support;

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api as KubeApi;
use support::{Api, Installation, free_port, unique};

const DEADLINE: Duration = Duration::from_secs(90);

async fn provision(api: &Api) {
    let (_, operation) = api.order(&format!("{}.example.social", unique("f"))).await;
    api.assert_succeeds(&operation, DEADLINE).await;
}

async fn lease(installation: &Installation) -> Lease {
    let client = herd_kube::client(None).await.unwrap();
    let leases: KubeApi<Lease> = KubeApi::namespaced(client, herd_kube::lease::LEASE_NAMESPACE);
    leases
        .get(&format!("herd-reconciler-{}", installation.name))
        .await
        .expect("the reconciler lease exists")
}

#[tokio::test]
async fn instances_are_provisioned_whichever_process_dies() {
    let mut installation = Installation::new().await;
    installation.set_up_fleet();
    let token = installation.token("failover@example.org", "customer");
    let client = reqwest::Client::new();
    let api_on = |port: u16| Api {
        http: client.clone(),
        base: format!("http://127.0.0.1:{port}"),
        token: token.clone(),
    };

    let (first_port, second_port) = (installation.port, free_port());
    let first = installation.serve(None);
    installation.port = second_port;
    let second = installation.serve(None);
    let (first_api, second_api) = (api_on(first_port), api_on(second_port));
    first_api.wait_until_serving().await;
    second_api.wait_until_serving().await;

    provision(&first_api).await;
    let holder = lease(&installation)
        .await
        .spec
        .unwrap()
        .holder_identity
        .unwrap();

    // Kill the first process; the second serves and reconciles on its own.
    drop(first);
    provision(&second_api).await;

    // A replacement for the first, then the second dies: the replacement takes over.
    installation.port = first_port;
    let replacement = installation.serve(None);
    first_api.wait_until_serving().await;
    drop(second);
    provision(&first_api).await;

    let after = lease(&installation).await.spec.unwrap();
    println!(
        "lease held first by {holder}, now by {:?} after {:?} transitions",
        after.holder_identity, after.lease_transitions
    );
    assert!(
        after.lease_transitions.unwrap_or(0) >= 1,
        "the lease never changed hands"
    );
    drop(replacement);
    installation.drop_database().await;
}
