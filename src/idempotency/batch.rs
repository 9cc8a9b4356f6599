//! Claims for the same hot seats, gathered into one statement.
//!
//! In a stampede every loser's claim is the same question ("are these seats taken?") with a
//! different key. Sent one by one, each pays a full statement in Postgres: a wake-up, a plan,
//! a commit record. Here the claims for one seat set queue behind a single drain task, which
//! sends everything that arrived while its previous statement ran as one multi-row insert with
//! one probe. No claim waits for a batch to fill: the first one goes alone, and batches grow
//! only as fast as claims arrive while Postgres is busy.
//!
//! While the seats' lock is held (the first request of a stampede is inside its critical
//! section), a batch waits for that outcome, up to `max_wait` in all: the seats are about to be
//! taken, and sending everyone on to the lock would only queue them there.
//!
//! The batch commits synchronously (on the main pool), unlike a plain claim: a settled answer
//! must be durable before the client hears it, and this way one WAL flush per batch does it.
//!
//! A claim whose key already exists (a retry, a reused key) gets no row back; it, and every
//! claim of a batch whose statement failed, then claims alone (a plain insert, then a read of
//! the record that is there).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::lock::Redlock;

use super::{Claim, ClaimToken, IdempotencyError, IdempotentRequest, SeatProbe, outcome};

/// Rows per statement at most (about 130 bytes of parameters each).
const MAX_ROWS: usize = 256;
/// How often a waiting batch asks again.
const WAIT_STEP: Duration = Duration::from_millis(2);

/// Which claims can share a statement: the same event and the same (sorted) seats.
type GroupKey = (Uuid, Vec<Uuid>);

struct Waiter {
    req: IdempotentRequest,
    token: Uuid,
    /// `None`: no row inserted for this claim; it goes the ordinary way.
    answer: oneshot::Sender<Option<Claim>>,
}

/// The queues of claims per seat set. A key is present while its drain task runs.
pub struct ClaimBatches {
    queues: Mutex<HashMap<GroupKey, Vec<Waiter>>>,
    /// Synchronous-commit sessions: the batches' settled answers are durable when they return.
    pool: PgPool,
    /// How long a batch may wait, in all, for the holder of the seats' lock to finish.
    max_wait: Duration,
}

impl ClaimBatches {
    pub fn new(pool: PgPool, max_wait: Duration) -> Self {
        Self { queues: Mutex::new(HashMap::new()), pool, max_wait }
    }

    /// Claims the key with the probe, in a batch with concurrent claims for the same seats.
    /// `pool` serves the plain claim when the batch inserted nothing for this key.
    pub async fn claim(
        self: &Arc<Self>,
        pool: &PgPool,
        req: &IdempotentRequest,
        lease: Duration,
        probe: &SeatProbe<'_>,
    ) -> Result<Claim, IdempotencyError> {
        let mut seats = probe.seat_ids.to_vec();
        seats.sort_unstable();
        let group = (probe.event_id, seats);
        let (answer, answered) = oneshot::channel();
        let waiter = Waiter { req: req.clone(), token: Uuid::new_v4(), answer };
        let start_drain = {
            let mut queues = self.queues.lock().expect("not poisoned");
            match queues.get_mut(&group) {
                Some(queue) => {
                    queue.push(waiter);
                    false
                }
                None => {
                    queues.insert(group.clone(), vec![waiter]);
                    true
                }
            }
        };
        if start_drain {
            let drain = Drain {
                batches: self.clone(),
                group,
                lease_ms: lease.as_millis() as i64,
                status: probe.status,
                body: probe.body.clone(),
                redlock: probe.redlock.clone(),
                lock_keys: probe.lock_keys.clone(),
                done: false,
            };
            tokio::spawn(drain.run());
        }
        match answered.await {
            Ok(Some(claim)) => Ok(claim),
            // The key exists already, or the batch failed: the plain claim says which.
            Ok(None) | Err(_) => super::claim_alone(pool.acquire().await?, req, lease).await,
        }
    }
}

/// Sends one seat set's queued claims, a batch at a time, until the queue is empty.
struct Drain {
    batches: Arc<ClaimBatches>,
    group: GroupKey,
    lease_ms: i64,
    status: u16,
    body: Value,
    /// The seats' lock: while it is taken, the seats are being decided (see [`SeatProbe`]).
    redlock: Arc<Redlock>,
    lock_keys: Vec<String>,
    /// Set once [`Drain::next_batch`] has removed the key itself.
    done: bool,
}

impl Drain {
    async fn run(mut self) {
        let mut waiting_since: Option<Instant> = None;
        while let Some(batch) = self.next_batch() {
            if waiting_since.get_or_insert_with(Instant::now).elapsed() < self.batches.max_wait
                && self.redlock.is_locked(&self.lock_keys).await
            {
                self.requeue(batch);
                tokio::time::sleep(WAIT_STEP).await;
                continue;
            }
            waiting_since = None;
            metrics::histogram!("holdfast_claim_batch_rows").record(batch.len() as f64);
            match self.insert(&batch).await {
                Ok(mut rows) => {
                    for waiter in batch {
                        let claim = rows.remove(&waiter.token).map(|(state, body)| {
                            if state == "IN_PROGRESS" {
                                outcome("claimed");
                                Claim::Owned(ClaimToken(waiter.token))
                            } else {
                                outcome("settled_at_claim");
                                Claim::Settled { status: self.status, body: body.unwrap_or(Value::Null) }
                            }
                        });
                        let _ = waiter.answer.send(claim); // a waiter that is gone needs no answer
                    }
                }
                Err(err) => {
                    tracing::warn!(error = %err, rows = batch.len(), "batched claim failed; claiming one by one");
                    // Dropping the batch drops every sender: each waiter claims on its own.
                }
            }
        }
    }

    /// Takes up to [`MAX_ROWS`] queued claims, or ends the drain (removing its key, under the
    /// same lock that enqueuers take) when none are left.
    fn next_batch(&mut self) -> Option<Vec<Waiter>> {
        let mut queues = self.batches.queues.lock().expect("not poisoned");
        let queue = queues.get_mut(&self.group)?;
        if queue.is_empty() {
            queues.remove(&self.group);
            self.done = true;
            return None;
        }
        let n = queue.len().min(MAX_ROWS);
        Some(queue.drain(..n).collect())
    }

    /// Puts a batch back at the head of the queue, ahead of what arrived meanwhile.
    fn requeue(&self, mut batch: Vec<Waiter>) {
        let mut queues = self.batches.queues.lock().expect("not poisoned");
        let queue = queues.get_mut(&self.group).expect("the key stays while its drain runs");
        batch.append(queue);
        *queue = batch;
    }

    /// One statement: probe the seats once, insert every claim settled (seats taken) or
    /// IN_PROGRESS (seats free). Returns the inserted rows by claim token.
    async fn insert(&self, batch: &[Waiter]) -> Result<HashMap<Uuid, (String, Option<Value>)>, sqlx::Error> {
        let (mut users, mut keys, mut fingerprints, mut tokens) = (vec![], vec![], vec![], vec![]);
        for waiter in batch {
            users.push(waiter.req.user_id.as_str());
            keys.push(waiter.req.key.as_str());
            fingerprints.push(waiter.req.fingerprint.as_slice());
            tokens.push(waiter.token);
        }
        let rows = sqlx::query!(
            r#"with taken as (
                 select coalesce(array_agg(id order by id), '{}') as ids
                   from seats
                  where event_id = $1 and id = any($2)
                    and (booking_id is not null or (hold_id is not null and hold_expires_at > now()))
             ), outcome as (
                 select case when cardinality(ids) = 0 then 'IN_PROGRESS' else 'SUCCEEDED' end as state,
                        case when cardinality(ids) = 0 then null else $4::int2 end as status,
                        case when cardinality(ids) = 0 then null
                             else jsonb_set($5::jsonb, '{seat_ids}', to_jsonb(ids)) end as body
                   from taken
             )
             insert into idempotency_records
                    (user_id, key, fingerprint, state, claim_token, lease_until, response_status, response_body)
             select r.user_id, r.key, r.fingerprint, o.state, r.claim_token,
                    now() + $3::int8 * interval '1 millisecond', o.status, o.body
               from unnest($6::text[], $7::text[], $8::bytea[], $9::uuid[]) as r(user_id, key, fingerprint, claim_token),
                    outcome o
             on conflict (user_id, key) do nothing
             returning claim_token, state, response_body"#,
            self.group.0,
            &self.group.1,
            self.lease_ms,
            self.status as i16,
            &self.body,
            &users as &[&str],
            &keys as &[&str],
            &fingerprints as &[&[u8]],
            &tokens,
        )
        .fetch_all(&self.batches.pool)
        .await?;
        Ok(rows.into_iter().map(|r| (r.claim_token, (r.state, r.response_body))).collect())
    }
}

impl Drop for Drain {
    /// A drain that ends early (a panic) must not leave its key behind: later claims for these
    /// seats would queue with nobody to send them. Dropping the queue makes them claim alone.
    fn drop(&mut self) {
        if !self.done
            && let Ok(mut queues) = self.batches.queues.lock()
        {
            queues.remove(&self.group);
        }
    }
}
