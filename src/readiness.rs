//! `/ready`'s verdict on the dependencies, shared: the probe itself, apart from the HTTP answer
//! (`api::ops::ready`).

use std::time::{Duration, Instant};

use sqlx::PgPool;

use crate::lock::Redlock;

/// `/ready`'s verdict on Postgres and the Redis quorum, computed at most once per
/// [`READINESS_TTL`]: concurrent callers wait for the one probe in flight and share its answer,
/// so `/ready` cannot be used to multiply load on the dependencies.
#[derive(Default)]
pub struct ReadinessCache(tokio::sync::Mutex<Option<(Instant, Readiness)>>);

#[derive(Clone, Copy)]
pub struct Readiness {
    pub postgres: bool,
    pub redis_up: usize,
    pub redis_nodes: usize,
}

pub const READINESS_TTL: Duration = Duration::from_secs(1);

impl ReadinessCache {
    pub async fn get(&self, probe_db: &PgPool, redlock: &Redlock) -> Readiness {
        let mut cached = self.0.lock().await;
        if let Some((at, verdict)) = *cached
            && at.elapsed() < READINESS_TTL
        {
            return verdict;
        }
        let db = async {
            matches!(
                tokio::time::timeout(Duration::from_secs(1), sqlx::query("select 1").execute(probe_db)).await,
                Ok(Ok(_))
            )
        };
        let (postgres, nodes) = tokio::join!(db, redlock.ping_all());
        metrics::counter!("holdfast_readiness_probes_total").increment(1);
        let verdict =
            Readiness { postgres, redis_up: nodes.iter().filter(|ok| **ok).count(), redis_nodes: nodes.len() };
        *cached = Some((Instant::now(), verdict));
        verdict
    }
}
