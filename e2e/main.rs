//! End-to-end suite: the real `airgate controller` against a real kube-apiserver and etcd
//! (built and started by `e2e/harness`), with backends on loopback published through
//! Services and EndpointSlices. Run with `cargo test --test e2e`.
//!
//! One control plane per run. A single test function owns it and runs the scenarios in
//! order, each in its own task with a time limit, so that a failing or panicking scenario
//! is reported by name while the others still run and the cluster is still torn down.
#![forbid(unsafe_code)]

mod scenarios;
mod support;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use scenarios::Env;
use support::R;

type Scenario = fn(Arc<Env>) -> Pin<Box<dyn Future<Output = R> + Send>>;

macro_rules! scenario {
    ($f:path) => {
        (stringify!($f), (|env| Box::pin($f(env))) as Scenario)
    };
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e2e() {
    let started = Instant::now();
    let env = Arc::new(Env::setup().await);

    let scenarios: Vec<(&str, Scenario)> = vec![
        scenario!(scenarios::ready_and_explains_missing_crd),
        // Before the CRD exists: Ingresses must be served all the same.
        scenario!(scenarios::ingress_is_served),
        scenario!(scenarios::install_crd),
        scenario!(scenarios::airroute_is_served),
        scenario!(scenarios::malformed_airroute_is_skipped),
        scenario!(scenarios::route_change_is_served_within_a_second),
        scenario!(scenarios::deleted_route_answers_404),
        scenario!(scenarios::scaled_endpoints_share_traffic),
        scenario!(scenarios::missing_service_sets_resolved_refs_false),
        scenario!(scenarios::invalid_airroute_is_refused_by_the_api_server),
        scenario!(scenarios::other_class_ingress_is_ignored),
        scenario!(scenarios::ingress_moved_to_another_class_gives_back_its_status),
        scenario!(scenarios::tls_secret_added_later_is_served),
        scenario!(scenarios::status_is_written),
        scenario!(scenarios::replicas_elect_one_status_writer),
        scenario!(scenarios::apiserver_restart_does_not_interrupt_traffic),
    ];

    let mut failed = Vec::new();
    for (name, run) in scenarios {
        let t0 = Instant::now();
        let outcome =
            tokio::time::timeout(Duration::from_secs(120), tokio::spawn(run(env.clone()))).await;
        let result = match outcome {
            Ok(Ok(r)) => r,
            Ok(Err(join)) => Err(format!("panicked: {join}")),
            Err(_) => Err("did not finish within 120s".into()),
        };
        match result {
            Ok(()) => eprintln!("e2e: ok   {name} ({:.1?})", t0.elapsed()),
            Err(e) => {
                eprintln!("e2e: FAIL {name} ({:.1?}): {e}", t0.elapsed());
                failed.push(format!("{name}: {e}"));
            }
        }
    }

    // Graceful stop last: SIGTERM must end the controller promptly and cleanly.
    let stop = match Arc::try_unwrap(env) {
        Ok(env) => env.shutdown().await,
        Err(_) => Err("a scenario still holds the environment".into()),
    };
    if let Err(e) = stop {
        failed.push(format!("sigterm_stops_the_controller: {e}"));
    }
    eprintln!("e2e: finished in {:.1?}", started.elapsed());
    assert!(
        failed.is_empty(),
        "{} e2e scenario(s) failed:\n{}",
        failed.len(),
        failed.join("\n")
    );
}
