//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's leaderelection
//! does it: the holder renews `renewTime` every few seconds; anyone may take the Lease once
//! `renewTime + leaseDurationSeconds` has passed. Every write carries the resourceVersion
//! that was read, so two replicas racing for an expired Lease cannot both win: the API
//! server answers 409 Conflict to the slower one.
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use tokio::sync::watch;

/// Who we are and which Lease we compete for.
#[derive(Debug, Clone)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// How long a Lease holds without renewal.
    pub lease_duration: Duration,
    /// How often the holder renews (and others retry).
    pub renew_every: Duration,
    /// Bound on each API call.
    pub call_timeout: Duration,
}

impl LeaseSettings {
    /// `POD_NAME` when running in a pod, else `hostname-pid`.
    pub fn default_identity() -> String {
        if let Ok(pod) = std::env::var("POD_NAME")
            && !pod.is_empty()
        {
            return pod;
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "airgate".into());
        format!("{host}-{}", std::process::id())
    }
}

/// What one election round decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Create the Lease naming us.
    Create,
    /// We hold it: renew.
    Renew,
    /// It expired (or was released): take it over.
    TakeOver,
    /// Someone else holds a live Lease.
    Follow,
}

/// The pure part of an election round, given the Lease as read (if any).
pub fn decide(lease: Option<&Lease>, identity: &str, now: Timestamp) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    let spec = lease.spec.as_ref();
    let holder = spec
        .and_then(|s| s.holder_identity.as_deref())
        .unwrap_or("");
    if holder == identity {
        return Decision::Renew;
    }
    if holder.is_empty() {
        return Decision::TakeOver;
    }
    let duration = spec
        .and_then(|s| s.lease_duration_seconds)
        .unwrap_or(15)
        .max(1);
    let renewed = spec
        .and_then(|s| s.renew_time.as_ref().or(s.acquire_time.as_ref()))
        .map(|t| t.0);
    match renewed {
        Some(t) if t + SignedDuration::from_secs(i64::from(duration)) > now => Decision::Follow,
        _ => Decision::TakeOver,
    }
}

fn spec_for(settings: &LeaseSettings, now: Timestamp, previous: Option<&LeaseSpec>) -> LeaseSpec {
    let secs = i32::try_from(settings.lease_duration.as_secs().max(1)).unwrap_or(15);
    let ours = previous.and_then(|p| p.holder_identity.as_deref()) == Some(&settings.identity);
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    LeaseSpec {
        holder_identity: Some(settings.identity.clone()),
        lease_duration_seconds: Some(secs),
        acquire_time: if ours {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(MicroTime(now))
        },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(if ours || previous.is_none() {
            transitions
        } else {
            transitions + 1
        }),
        ..Default::default()
    }
}

/// One election round: returns whether we hold the Lease afterwards.
pub async fn round(api: &Api<Lease>, settings: &LeaseSettings) -> Result<bool, kube::Error> {
    let current = api.get_opt(&settings.name).await?;
    let now = Timestamp::now();
    match decide(current.as_ref(), &settings.identity, now) {
        Decision::Follow => Ok(false),
        Decision::Create => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(settings.name.clone()),
                    namespace: Some(settings.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(spec_for(settings, now, None)),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Decision::Renew | Decision::TakeOver => {
            let mut lease = current.unwrap_or_default();
            lease.spec = Some(spec_for(settings, now, lease.spec.as_ref()));
            // `replace` sends the resourceVersion we read: a concurrent writer makes this
            // fail with 409 instead of silently stealing the Lease back.
            match api
                .replace(&settings.name, &PostParams::default(), &lease)
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Give the Lease up (on shutdown) so another replica takes over at once.
pub async fn release(api: &Api<Lease>, settings: &LeaseSettings) -> Result<(), kube::Error> {
    let Some(mut lease) = api.get_opt(&settings.name).await? else {
        return Ok(());
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(&settings.identity) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    api.replace(&settings.name, &PostParams::default(), &lease)
        .await
        .map(|_| ())
}

/// Run the election until `shutdown` fires, publishing whether we lead on the returned
/// channel and in the `airgate_leader` gauge. Releases the Lease on the way out.
pub fn spawn(
    client: Client,
    settings: LeaseSettings,
    mut shutdown: watch::Receiver<bool>,
) -> (watch::Receiver<bool>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &settings.namespace);
        let gauge = &crate::telemetry::metrics().leader;
        let mut last_renew: Option<tokio::time::Instant> = None;
        loop {
            let result = tokio::time::timeout(settings.call_timeout, round(&api, &settings)).await;
            let leading = match result {
                Ok(Ok(true)) => {
                    last_renew = Some(tokio::time::Instant::now());
                    true
                }
                Ok(Ok(false)) => false,
                Ok(Err(e)) => {
                    tracing::warn!(lease = %settings.name, error = %e, "lease renewal failed");
                    still_valid(last_renew, &settings)
                }
                Err(_) => {
                    tracing::warn!(lease = %settings.name, "lease renewal timed out");
                    still_valid(last_renew, &settings)
                }
            };
            if leading != *tx.borrow() {
                if leading {
                    tracing::info!(identity = %settings.identity, lease = %settings.name, "became the status-writing leader");
                } else {
                    tracing::info!(identity = %settings.identity, lease = %settings.name, "no longer the leader");
                }
            }
            gauge.set(i64::from(leading));
            tx.send_replace(leading);
            tokio::select! {
                _ = tokio::time::sleep(settings.renew_every) => {}
                _ = shutdown.changed() => break,
            }
        }
        if *tx.borrow() {
            let _ = tokio::time::timeout(settings.call_timeout, release(&api, &settings)).await;
        }
        gauge.set(0);
        tx.send_replace(false);
    });
    (rx, task)
}

/// While the API server is unreachable we keep leading only as long as our last renewal
/// lasts; after that another replica may have taken over.
fn still_valid(last_renew: Option<tokio::time::Instant>, settings: &LeaseSettings) -> bool {
    last_renew
        .is_some_and(|t| t.elapsed() < settings.lease_duration.saturating_sub(settings.renew_every))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_secs_ago: i64, duration: i32, now: Timestamp) -> Lease {
        Lease {
            metadata: Default::default(),
            spec: Some(LeaseSpec {
                holder_identity: holder.map(str::to_string),
                lease_duration_seconds: Some(duration),
                renew_time: Some(MicroTime(now - SignedDuration::from_secs(renewed_secs_ago))),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn elections_follow_the_lease_rules() {
        let now = Timestamp::from_second(1_800_000_000).expect("valid");
        assert_eq!(decide(None, "me", now), Decision::Create);
        assert_eq!(
            decide(Some(&lease(Some("me"), 100, 15, now)), "me", now),
            Decision::Renew
        );
        assert_eq!(
            decide(Some(&lease(Some("other"), 3, 15, now)), "me", now),
            Decision::Follow
        );
        assert_eq!(
            decide(Some(&lease(Some("other"), 16, 15, now)), "me", now),
            Decision::TakeOver
        );
        assert_eq!(
            decide(Some(&lease(None, 0, 15, now)), "me", now),
            Decision::TakeOver
        );
    }

    #[test]
    fn takeover_counts_a_transition_and_renewal_keeps_acquire_time() {
        let now = Timestamp::from_second(1_800_000_000).expect("valid");
        let settings = LeaseSettings {
            name: "l".into(),
            namespace: "default".into(),
            identity: "me".into(),
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
        };
        let theirs = LeaseSpec {
            holder_identity: Some("other".into()),
            lease_transitions: Some(2),
            ..Default::default()
        };
        let taken = spec_for(&settings, now, Some(&theirs));
        assert_eq!(taken.lease_transitions, Some(3));
        assert_eq!(taken.holder_identity.as_deref(), Some("me"));
        let later = now + SignedDuration::from_secs(2);
        let renewed = spec_for(&settings, later, Some(&taken));
        assert_eq!(renewed.lease_transitions, Some(3));
        assert_eq!(renewed.acquire_time, taken.acquire_time);
        assert_eq!(renewed.renew_time, Some(MicroTime(later)));
    }
}
