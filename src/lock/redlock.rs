//! Node I/O for the Redlock: parallel calls, each under its own timeout, one Lua round trip per
//! node for any number of keys (all or none), token-checked release and extend.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use futures_util::future::join_all;
use futures_util::stream::FuturesUnordered;
use rand::Rng;
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::quorum::{self, Verdict};
use crate::config::RedisConfig;

/// Sets every key to the token, or none if any key exists. Keys arrive sorted, so two
/// overlapping multi-seat requests can never each hold half of the other's seats.
const ACQUIRE: &str = r#"
for _, key in ipairs(KEYS) do
  if redis.call('exists', key) == 1 then return 0 end
end
for _, key in ipairs(KEYS) do
  redis.call('set', key, ARGV[1], 'PX', ARGV[2])
end
return 1
"#;

/// Deletes only the keys that still carry our token.
const RELEASE: &str = r#"
local released = 0
for _, key in ipairs(KEYS) do
  if redis.call('get', key) == ARGV[1] then
    redis.call('del', key)
    released = released + 1
  end
end
return released
"#;

/// Extends all keys if every one still carries our token, else none.
const EXTEND: &str = r#"
for _, key in ipairs(KEYS) do
  if redis.call('get', key) ~= ARGV[1] then return 0 end
end
for _, key in ipairs(KEYS) do
  redis.call('pexpire', key, ARGV[2])
end
return 1
"#;

#[derive(Debug, Clone)]
pub struct RedlockConfig {
    pub ttl: Duration,
    pub drift_factor: f64,
    pub retry_count: u32,
    pub retry_delay: Duration,
    /// Bound on one call to one node, connecting included.
    pub node_timeout: Duration,
    pub key_prefix: String,
}

impl From<&RedisConfig> for RedlockConfig {
    fn from(config: &RedisConfig) -> Self {
        Self {
            ttl: Duration::from_millis(config.redlock_ttl_ms),
            drift_factor: config.redlock_drift_factor,
            retry_count: config.redlock_retry_count,
            retry_delay: Duration::from_millis(config.redlock_retry_delay_ms),
            node_timeout: Duration::from_millis(config.timeout_ms),
            key_prefix: config.key_prefix.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error, Clone, Copy, PartialEq, Eq)]
pub enum LockError {
    #[error("the resources are locked by another request")]
    Contended,
    #[error("too few lock nodes answered")]
    Unavailable,
}

/// A lock held on a majority of nodes. Dropping it does not release it: call
/// [`Redlock::release`] (the key's TTL frees it otherwise).
#[derive(Debug)]
pub struct Lock {
    keys: Vec<String>,
    token: String,
    valid_until: Instant,
}

impl Lock {
    /// Validity left on the lock by this process's monotonic clock (zero once expired).
    pub fn remaining(&self) -> Duration {
        self.valid_until.saturating_duration_since(Instant::now())
    }
}

struct Node {
    /// Label for metrics and logs: `host:port`, never credentials.
    label: String,
    conn: ConnectionManager,
}

pub struct Redlock {
    nodes: Vec<Node>,
    config: RedlockConfig,
    acquire: Script,
    release: Script,
    extend: Script,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NodeReply {
    Granted,
    Taken,
    Failed,
}

impl Redlock {
    /// Connects lazily: a node that is down at start-up does not stop the service starting.
    pub fn new(urls: &[String], config: RedlockConfig) -> Result<Self, redis::RedisError> {
        let mut nodes = Vec::with_capacity(urls.len());
        for url in urls {
            let client = redis::Client::open(url.as_str())?;
            let info = client.get_connection_info();
            let label = format!("{}", info.addr());
            // The manager reconnects in the background after a failure; our own timeout around
            // every call bounds how long a request can wait on a dead or blackholed node.
            let manager_config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.node_timeout))
                .set_response_timeout(Some(config.node_timeout))
                .set_number_of_retries(1)
                .set_min_delay(Duration::from_millis(10))
                .set_max_delay(Duration::from_millis(200));
            let conn = ConnectionManager::new_lazy_with_config(client, manager_config)?;
            nodes.push(Node { label, conn });
        }
        Ok(Self {
            nodes,
            config,
            acquire: Script::new(ACQUIRE),
            release: Script::new(RELEASE),
            extend: Script::new(EXTEND),
        })
    }

    pub fn node_count(&self) -> usize {
        self.nodes.len()
    }

    pub fn quorum(&self) -> usize {
        quorum::quorum(self.nodes.len())
    }

    pub fn node_labels(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().map(|n| n.label.as_str())
    }

    /// Whether a majority of nodes hold a key on any of these resources right now: someone is
    /// inside their critical section. A hint for callers that would rather wait for that
    /// outcome than queue for the lock; a node that fails to answer in time counts as "no".
    pub async fn is_locked(&self, resources: &[String]) -> bool {
        let exists = redis::cmd("EXISTS").arg(self.keys(resources)).to_owned();
        let replies = join_all(self.nodes.iter().map(|node| {
            let (mut conn, exists) = (node.conn.clone(), &exists);
            async move {
                let reply = tokio::time::timeout(self.config.node_timeout, exists.query_async::<u64>(&mut conn)).await;
                matches!(reply, Ok(Ok(n)) if n > 0)
            }
        }))
        .await;
        replies.into_iter().filter(|held| *held).count() >= self.quorum()
    }

    fn keys(&self, resources: &[String]) -> Vec<String> {
        let mut keys: Vec<String> = resources.iter().map(|r| format!("{}{}", self.config.key_prefix, r)).collect();
        keys.sort();
        keys.dedup();
        keys
    }

    /// Locks every resource on a majority of nodes, all or nothing, retrying with jitter.
    /// After an attempt that found the resources taken, `keep_trying` says whether another
    /// attempt is worth it: the caller may know the resources are gone for good (a seat that is
    /// already sold), and a stampede's losers should hear so at once rather than queue.
    /// `patience` multiplies the configured retry count (and halves the delay between tries),
    /// for resources where waiting in line is the normal case (every booking of a night takes
    /// that night's key).
    pub async fn acquire<F, Fut>(
        &self,
        resources: &[String],
        patience: u32,
        mut keep_trying: F,
    ) -> Result<Lock, LockError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let keys = self.keys(resources);
        let started = Instant::now();
        let mut outcome = "unavailable";
        let mut last = LockError::Unavailable;
        for attempt in 0..=self.config.retry_count.saturating_mul(patience.max(1)) {
            if attempt > 0 {
                // A patient caller polls more often: its key is busy, not lost.
                let base = if patience > 1 { self.config.retry_delay / 2 } else { self.config.retry_delay };
                let jitter = rand::rng().random_range(0..=base.as_millis() as u64);
                tokio::time::sleep(base + Duration::from_millis(jitter)).await;
            }
            match self.try_acquire(&keys).await {
                Ok(lock) => {
                    record_acquisition("acquired", started);
                    return Ok(lock);
                }
                Err(LockError::Contended) => {
                    (last, outcome) = (LockError::Contended, "contended");
                    if !keep_trying().await {
                        outcome = "gave_up";
                        break;
                    }
                }
                Err(err) => (last, outcome) = (err, "unavailable"),
            }
        }
        record_acquisition(outcome, started);
        Err(last)
    }

    async fn try_acquire(&self, keys: &[String]) -> Result<Lock, LockError> {
        let token = uuid::Uuid::new_v4().to_string();
        let ttl_ms = self.config.ttl.as_millis() as u64;
        let started = Instant::now();
        let replies = join_all(self.nodes.iter().map(|node| async {
            let mut invocation = self.acquire.prepare_invoke();
            for key in keys {
                invocation.key(key);
            }
            invocation.arg(&token).arg(ttl_ms);
            let mut conn = node.conn.clone();
            let reply =
                match tokio::time::timeout(self.config.node_timeout, invocation.invoke_async::<i64>(&mut conn)).await {
                    Ok(Ok(1)) => NodeReply::Granted,
                    Ok(Ok(_)) => NodeReply::Taken,
                    Ok(Err(err)) => {
                        tracing::debug!(node = %node.label, error = %err, "lock node call failed");
                        NodeReply::Failed
                    }
                    Err(_) => NodeReply::Failed,
                };
            metrics::counter!("holdfast_lock_node_replies_total", "node" => node.label.clone(), "reply" => match reply {
                NodeReply::Granted => "granted",
                NodeReply::Taken => "taken",
                NodeReply::Failed => "error",
            })
            .increment(1);
            reply
        }))
        .await;
        let granted = replies.iter().filter(|r| **r == NodeReply::Granted).count();
        let errors = replies.iter().filter(|r| **r == NodeReply::Failed).count();
        let validity = quorum::validity(self.config.ttl, started.elapsed(), self.config.drift_factor);
        match quorum::verdict(self.nodes.len(), granted, errors, validity) {
            Verdict::Acquired => Ok(Lock {
                keys: keys.to_vec(),
                token,
                valid_until: started + validity.expect("acquired implies validity"),
            }),
            verdict => {
                // Release wherever we may have set the keys: nodes that granted, and nodes whose
                // reply was lost. A node that answered "taken" set nothing of ours.
                let ours: Vec<bool> = replies.iter().map(|r| *r != NodeReply::Taken).collect();
                self.release_on(keys, &token, &ours).await;
                Err(match verdict {
                    Verdict::Contended => LockError::Contended,
                    _ => LockError::Unavailable,
                })
            }
        }
    }

    /// Releases the lock on every node; only keys still carrying our token are deleted.
    pub async fn release(&self, lock: Lock) {
        self.release_on(&lock.keys, &lock.token, &vec![true; self.nodes.len()]).await;
    }

    /// As [`Redlock::release`], and says so on `quorum` once a majority of the nodes have
    /// answered (released, or failed: their TTL frees the keys): from then on an acquisition of
    /// the same keys no longer finds them held on a majority.
    pub async fn release_telling(&self, lock: Lock, quorum: tokio::sync::oneshot::Sender<()>) {
        let mut pending: FuturesUnordered<_> =
            self.nodes.iter().map(|node| self.release_one(node, &lock.keys, &lock.token)).collect();
        let (mut quorum, mut answered) = (Some(quorum), 0);
        while pending.next().await.is_some() {
            answered += 1;
            if answered >= self.quorum()
                && let Some(quorum) = quorum.take()
            {
                let _ = quorum.send(());
            }
        }
    }

    /// Releases on the nodes flagged in `on` (same order as the nodes).
    async fn release_on(&self, keys: &[String], token: &str, on: &[bool]) {
        let nodes = self.nodes.iter().zip(on).filter(|(_, on)| **on);
        join_all(nodes.map(|(node, _)| self.release_one(node, keys, token))).await;
    }

    async fn release_one(&self, node: &Node, keys: &[String], token: &str) {
        let mut invocation = self.release.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        invocation.arg(token);
        let mut conn = node.conn.clone();
        if let Ok(Err(err)) | Err(err) =
            tokio::time::timeout(self.config.node_timeout, invocation.invoke_async::<i64>(&mut conn))
                .await
                .map_err(|_| redis::RedisError::from((redis::ErrorKind::Io, "timed out")))
        {
            tracing::debug!(node = %node.label, error = %err, "lock release failed; the key's TTL will free it");
        }
    }

    /// Pushes the lock's expiry out to a full TTL from now, on a majority, if it is still ours.
    pub async fn extend(&self, lock: &mut Lock) -> Result<(), LockError> {
        let ttl_ms = self.config.ttl.as_millis() as u64;
        let started = Instant::now();
        let replies = join_all(self.nodes.iter().map(|node| async {
            let mut invocation = self.extend.prepare_invoke();
            for key in &lock.keys {
                invocation.key(key);
            }
            invocation.arg(&lock.token).arg(ttl_ms);
            let mut conn = node.conn.clone();
            match tokio::time::timeout(self.config.node_timeout, invocation.invoke_async::<i64>(&mut conn)).await {
                Ok(Ok(1)) => NodeReply::Granted,
                Ok(Ok(_)) => NodeReply::Taken,
                _ => NodeReply::Failed,
            }
        }))
        .await;
        let granted = replies.iter().filter(|r| **r == NodeReply::Granted).count();
        let errors = replies.iter().filter(|r| **r == NodeReply::Failed).count();
        let validity = quorum::validity(self.config.ttl, started.elapsed(), self.config.drift_factor);
        match quorum::verdict(self.nodes.len(), granted, errors, validity) {
            Verdict::Acquired => {
                lock.valid_until = started + validity.expect("acquired implies validity");
                metrics::counter!("holdfast_lock_extensions_total", "outcome" => "extended").increment(1);
                Ok(())
            }
            Verdict::Contended => {
                metrics::counter!("holdfast_lock_extensions_total", "outcome" => "lost").increment(1);
                Err(LockError::Contended)
            }
            Verdict::Unavailable => {
                metrics::counter!("holdfast_lock_extensions_total", "outcome" => "unavailable").increment(1);
                Err(LockError::Unavailable)
            }
        }
    }

    /// PINGs every node in parallel; returns which answered, in node order.
    pub async fn ping_all(&self) -> Vec<bool> {
        join_all(self.nodes.iter().map(|node| async {
            let mut conn = node.conn.clone();
            matches!(
                tokio::time::timeout(self.config.node_timeout, redis::cmd("PING").query_async::<String>(&mut conn))
                    .await,
                Ok(Ok(_))
            )
        }))
        .await
    }
}

fn record_acquisition(outcome: &'static str, started: Instant) {
    metrics::counter!("holdfast_lock_acquisitions_total", "outcome" => outcome).increment(1);
    metrics::histogram!("holdfast_lock_acquire_duration_seconds", "outcome" => outcome)
        .record(started.elapsed().as_secs_f64());
}
