//! The one path every state-changing request takes:
//!
//! 1. (the handler has validated the input and built a [`Command`])
//! 2. claim the `Idempotency-Key` (autocommit; replay or refuse if it is not ours),
//! 3. [`Command::plan`]: read what the command acts on (autocommit; no locks held yet),
//! 4. take a quorum Redlock on every seat the command touches (no database connection held),
//! 5. one READ COMMITTED transaction: [`Command::apply`], then the idempotency completion,
//!    then a check that enough lock validity is left, then COMMIT,
//! 6. release the lock; settle the idempotency record (store a final answer, or mark FAILED).
//!
//! Most requests take a shorter way through steps 2 and 5 ([`execute_at_once`]): a key that
//! is not hot and whose lock is free at once is not claimed first; its record is written once,
//! settled, inside the transaction, so the request costs one commit. Whoever else holds the key
//! makes that insert fail, and the request then goes the whole way above, from the claim.
//!
//! The work runs in a tracked task, so a client that disconnects cannot cancel it half-way:
//! the record always ends SUCCEEDED or FAILED, and shutdown waits for it.

mod commands;

pub mod views;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures_util::FutureExt;

use serde_json::Value;
use tracing::Instrument;

pub use commands::{
    BestAvailable, BookSeats, CancelBooking, Command, ConfirmHold, CreateBestHold, CreateEvent, CreateHold,
    CreateInventory, CreateResource, CreateRoomHold, CreateSlotHold, CreateWebhook, DeleteWebhook, ExtendHold,
    JoinQueue, LeaveQueue, PatchEvent, PatchNights, ReleaseHold, RescheduleBooking, visible_booking, visible_hold,
};

use crate::db::write_tx::{Committed, Settle, WriteTx};
use crate::domain::Caller;
use crate::error::Error;
use crate::idempotency::{self, Answer, Claim, ClaimToken, IdempotentRequest};
use crate::lock::{Lock, LockError};
use crate::state::AppState;

/// The answer to a command, as stored for replay: the status is part of what an idempotency
/// record replays, so it is decided here (a number; `api` renders it).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: Value,
    /// True when this answer is a replay of a stored one.
    pub replayed: bool,
}

impl Reply {
    fn new(status: u16, body: Value) -> Self {
        Self { status, body, replayed: false }
    }

    pub fn created(body: Value) -> Self {
        Self::new(201, body)
    }

    pub fn ok(body: Value) -> Self {
        Self::new(200, body)
    }

    pub fn no_content() -> Self {
        Self::new(204, Value::Null)
    }
}

/// What [`Command::plan`] found: either the answer already (nothing to write), or what to lock.
pub enum Step {
    Done(Reply),
    Write(commands::Plan),
}

pub async fn run(
    state: &AppState,
    caller: Caller,
    idem: Option<IdempotentRequest>,
    command: impl Into<Command>,
) -> Result<Reply, Error> {
    let command = command.into();
    let state = state.clone();
    let tasks = state.tasks.clone();
    let task = tasks.spawn(
        async move {
            let started = Instant::now();
            let result = execute(&state, &caller, idem.as_ref(), &command).await;
            metrics::histogram!("holdfast_command_duration_seconds", "command" => command.name())
                .record(started.elapsed().as_secs_f64());
            result
        }
        .in_current_span(),
    );
    task.await.map_err(Error::internal)?
}

fn stage(name: &'static str, started: Instant) {
    metrics::histogram!("holdfast_stage_duration_seconds", "stage" => name).record(started.elapsed().as_secs_f64());
}

/// How the transaction deals with the request's key.
#[derive(Clone, Copy)]
enum Key<'a> {
    /// No `Idempotency-Key` (only commands that need none).
    None,
    /// Claimed IN_PROGRESS with this token: the transaction completes the record.
    Claimed(&'a IdempotentRequest, ClaimToken),
    /// Not claimed: the transaction writes the record, settled, or finds it someone else's.
    AtOnce(&'a IdempotentRequest),
}

async fn execute(
    state: &AppState,
    caller: &Caller,
    idem: Option<&IdempotentRequest>,
    command: &Command,
) -> Result<Reply, Error> {
    if let Some(req) = idem
        && !state.hot_seats.any_hot(command.requested_seats())
        && let Some(result) = execute_at_once(state, caller, req, command).await
    {
        return result;
    }
    let claimed = match idem {
        Some(req) => {
            let started = Instant::now();
            let lease = Duration::from_secs(state.config.idempotency.lease_seconds as u64);
            let probe = command.seat_probe(state);
            let claim = idempotency::claim(&state.claims_db, req, lease, probe.as_ref()).await;
            stage("claim", started);
            match claim? {
                Claim::Owned(token) => Some((req, token)),
                Claim::Settled { status, body } => {
                    // Decided at claim time (the seats are taken), and already durable.
                    state.hot_seats.mark(command.requested_seats());
                    return Ok(Reply { status, body, replayed: false });
                }
                Claim::Replay { status, body } => {
                    return Ok(Reply { status, body, replayed: true });
                }
            }
        }
        None => None,
    };

    // A panic (a bug) must not strand the key IN_PROGRESS for its whole lease: it becomes a
    // 500 here, and the record is marked FAILED below, so the client's retry runs again.
    let key = match claimed {
        Some((req, token)) => Key::Claimed(req, token),
        None => Key::None,
    };
    let result = AssertUnwindSafe(plan_lock_apply(state, caller, key, command))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Err(panicked(command, panic)));
    if matches!(result, Err(Error::SeatUnavailable { .. } | Error::SeatLocked)) {
        // Others want these seats too: the next claims for them probe first.
        state.hot_seats.mark(command.requested_seats());
    }

    // Settle the record unless the transaction already completed it.
    if let Some((req, token)) = claimed {
        let settled = match &result {
            Ok((_, true)) => Ok(()),
            Ok((reply, false)) => store(state, req, token, reply.status, &reply.body).await,
            Err(err) if err.is_final_outcome() => store(state, req, token, err.status(), &err.body()).await,
            Err(_) => idempotency::fail(&state.claims_db, req, token).await,
        };
        if let Err(err) = settled {
            // The lease will run out and the recovery job will mark it FAILED.
            tracing::warn!(error = %err, "could not settle the idempotency record");
        }
    }
    result.map(|(reply, _)| reply)
}

/// The short way: execute without claiming the key first, and write its record once, settled,
/// in the same transaction. None when the key turns out to be someone else's, or the lock is
/// contended (others want these seats: a retry meanwhile must hear IDEMPOTENCY_IN_PROGRESS):
/// nothing was written, and the caller goes the whole way, from the claim.
async fn execute_at_once(
    state: &AppState,
    caller: &Caller,
    req: &IdempotentRequest,
    command: &Command,
) -> Option<Result<Reply, Error>> {
    let result = AssertUnwindSafe(plan_lock_apply(state, caller, Key::AtOnce(req), command))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| Err(panicked(command, panic)));
    let (status, body) = match &result {
        Ok((_, true)) => return Some(result.map(|(reply, _)| reply)),
        // The key is someone else's, or the seats' lock is taken (plan_lock_apply says so with
        // this same error), or a night's lock stayed taken for all the patient wait: claim, and
        // then wait (again) or hear why not.
        Err(Error::IdempotencyInProgress | Error::SeatLocked) => {
            state.hot_seats.mark(command.requested_seats());
            return None;
        }
        Ok((reply, false)) => (reply.status, reply.body.clone()),
        Err(err) if err.is_final_outcome() => (err.status(), err.body()),
        Err(_) => {
            if let Err(db) = idempotency::record_failed(&state.claims_db, req).await {
                tracing::warn!(error = %db, "could not mark the idempotency record FAILED");
            }
            return Some(result.map(|(reply, _)| reply));
        }
    };
    if matches!(result, Err(Error::SeatUnavailable { .. })) {
        state.hot_seats.mark(command.requested_seats());
    }
    // Settled without a write of ours (nothing to do, or refused): store the answer on its own.
    let stored = async {
        let mut conn = state.db.acquire().await?;
        idempotency::record(&mut conn, req, status, answer(state, &body)).await
    };
    match stored.await {
        Ok(true) => {
            idempotency::executed_at_once();
            Some(result.map(|(reply, _)| reply))
        }
        Ok(false) => None,
        Err(db) => {
            // Nothing of ours was written either way: a retry runs again and answers the same.
            tracing::warn!(error = %db, "could not store the idempotency record");
            Some(result.map(|(reply, _)| reply))
        }
    }
}

/// A panic caught in a command, as the 500 it answers (the message goes to the log only).
fn panicked(command: &Command, panic: Box<dyn std::any::Any + Send>) -> Error {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    Error::internal(format!("{} panicked: {what}", command.name()))
}

async fn store(
    state: &AppState,
    req: &IdempotentRequest,
    token: ClaimToken,
    status: u16,
    body: &Value,
) -> Result<(), sqlx::Error> {
    let mut conn = state.db.acquire().await?;
    idempotency::complete(&mut conn, req, token, status, answer(state, body)).await.map(|_| ())
}

/// An answer as this instance stores it: packed or as JSON (`IDEMPOTENCY_PACKED_ANSWERS`).
fn answer<'a>(state: &AppState, body: &'a Value) -> Answer<'a> {
    Answer { body, packed: state.config.idempotency.packed_answers }
}

/// Returns the reply and whether the idempotency record was completed inside the transaction.
async fn plan_lock_apply(
    state: &AppState,
    caller: &Caller,
    key: Key<'_>,
    command: &Command,
) -> Result<(Reply, bool), Error> {
    let started = Instant::now();
    let mut plan = match command.plan(state, caller).await? {
        Step::Done(reply) => return Ok((reply, false)),
        Step::Write(plan) => plan,
    };
    stage("plan", started);
    let marked = plan.marked.take();
    let result = lock_apply(state, key, command, caller, plan).await;
    if result.is_err()
        && let Some(marked) = marked
    {
        // Not committed: the seats the plan took in memory are offered again.
        marked.give_back();
    }
    let reply = result?;
    command.count_success();
    Ok((reply, !matches!(key, Key::None)))
}

/// Locks what the plan names, then runs the transaction.
async fn lock_apply(
    state: &AppState,
    key: Key<'_>,
    command: &Command,
    caller: &Caller,
    plan: commands::Plan,
) -> Result<Reply, Error> {
    let lock = if plan.resources.is_empty() {
        None
    } else {
        let started = Instant::now();
        // A contended lock on what is already gone for good will not help anyone: answer at once.
        let gave_up = std::sync::Mutex::new(None);
        let lock = state
            .redlock
            .acquire(&plan.resources, command.lock_patience(&plan), || async {
                // Contended: others want these seats now. The next claims for them go in batches.
                state.hot_seats.mark(command.requested_seats());
                if matches!(key, Key::AtOnce(_)) && command.lock_patience(&plan) == 1 {
                    // A seat or slot someone else is deciding: claim the key first, then wait,
                    // so that a retry meanwhile hears IDEMPOTENCY_IN_PROGRESS. (A night's key is
                    // a queue every request of that night joins: waiting there at once is normal.)
                    *gave_up.lock().expect("not poisoned") = Some(Error::IdempotencyInProgress);
                    return false;
                }
                let why = command.why_give_up(state, &plan).await.unwrap_or_default();
                let keep_trying = why.is_none();
                *gave_up.lock().expect("not poisoned") = why;
                keep_trying
            })
            .await;
        stage("lock", started);
        match (lock, gave_up.into_inner().expect("not poisoned")) {
            (Ok(lock), _) => Some(lock),
            (Err(LockError::Contended), Some(why)) => return Err(why),
            (Err(err), _) => return Err(err.into()),
        }
    };
    if state.config.faults.post_lock_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(state.config.faults.post_lock_delay_ms)).await;
    }

    let started = Instant::now();
    let result = transact(state, caller, key, command, plan, lock).await;
    stage("transaction", started);
    let (reply, lock) = result?;
    if let Some(lock) = lock {
        // Release is best-effort (the TTL frees the keys regardless), and the tracker makes
        // shutdown wait for it. The answer waits only for a majority of the nodes: the client's
        // next command on the same keys (a confirm or release right after its hold) must not
        // find them still held and wait a retry's delay, 50-100 ms, for a lock that is ours.
        let (released, quorum) = tokio::sync::oneshot::channel();
        let redlock = state.redlock.clone();
        state.tasks.spawn(async move { redlock.release_telling(lock, released).await });
        let _ = quorum.await;
    }
    Ok(reply)
}

async fn transact(
    state: &AppState,
    caller: &Caller,
    key: Key<'_>,
    command: &Command,
    plan: commands::Plan,
    mut lock: Option<Lock>,
) -> Result<(Reply, Option<Lock>), Error> {
    let outcome = async {
        // READ COMMITTED (Postgres's default): every write below carries its own guard, and
        // blocked writers re-check those guards against the winner's row.
        let capped = state.config.holds.max_live_per_user > 0 && command.creates_live_hold();
        let (mut tx, live_holds) = WriteTx::begin_as(
            &state.db,
            &caller.user_id,
            caller.role(),
            caller.request_id.as_deref(),
            capped,
            command.logged(&plan),
        )
        .await?;
        let cap = state.config.holds.max_live_per_user;
        if live_holds.is_some_and(|n| n >= cap) {
            tx.rollback().await;
            return Err(Error::TooManyHolds { limit: cap });
        }
        let reply = match before_commit(&mut tx, state, caller, key, command, plan, lock.as_mut()).await {
            Ok(reply) => reply,
            Err(err) => {
                tx.rollback().await;
                return Err(err);
            }
        };
        let settle = match key {
            Key::AtOnce(req) => Settle::Record { req, status: reply.status, answer: answer(state, &reply.body) },
            Key::None | Key::Claimed(..) => Settle::Nothing,
        };
        match tx.commit(settle).await? {
            Committed::Yes => {
                // Stream clients on every instance hear of it (see `crate::streams`).
                state.hub.written.notify_one();
                Ok(reply)
            }
            // Another execution has the key: it owns the outcome.
            Committed::KeyTaken => Err(Error::IdempotencyInProgress),
        }
    };
    // Caught here too, so that a panic inside the transaction still releases the lock below.
    let outcome = AssertUnwindSafe(outcome).catch_unwind().await.unwrap_or_else(|panic| Err(panicked(command, panic)));
    match outcome {
        Ok(reply) => Ok((reply, lock)),
        Err(err) => {
            if let Some(lock) = lock {
                state.redlock.release(lock).await;
            }
            Err(err)
        }
    }
}

/// Everything in the transaction up to its COMMIT: the command's writes, the completion of a
/// claimed key, and the lock's validity. An error rolls back.
async fn before_commit(
    tx: &mut WriteTx,
    state: &AppState,
    caller: &Caller,
    key: Key<'_>,
    command: &Command,
    plan: commands::Plan,
    lock: Option<&mut Lock>,
) -> Result<Reply, Error> {
    let reply = command.apply(tx.conn(), state, caller, plan).await?;
    if state.config.faults.panic_once.as_deref() == Some(command.name())
        && state.fault_panic_armed.swap(false, Ordering::SeqCst)
    {
        panic!("HOLDFAST_FAULT_PANIC_ONCE: a bug inside the transaction");
    }
    if let Key::Claimed(req, token) = key
        && !idempotency::complete(tx.conn(), req, token, reply.status, answer(state, &reply.body)).await?
    {
        // Our key was taken over while we were paused: the other execution owns the outcome.
        return Err(Error::IdempotencyInProgress);
    }
    if let Some(lock) = lock {
        ensure_validity(state, lock).await?;
    }
    if state.config.faults.pre_commit_delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(state.config.faults.pre_commit_delay_ms)).await;
    }
    Ok(reply)
}

/// Refuses to commit on a lock that is about to lapse, unless it can be extended in time.
/// This closes most of the window in which a paused process commits on an expired lock;
/// the SQL guards close the rest.
async fn ensure_validity(state: &AppState, lock: &mut Lock) -> Result<(), Error> {
    let margin = Duration::from_millis(state.config.redis.redlock_commit_margin_ms);
    if lock.remaining() >= margin {
        return Ok(());
    }
    if lock.remaining() > Duration::ZERO && state.redlock.extend(lock).await.is_ok() && lock.remaining() >= margin {
        return Ok(());
    }
    metrics::counter!("holdfast_commits_refused_total", "reason" => "lock_validity").increment(1);
    tracing::warn!("refusing to commit: too little lock validity left");
    Err(Error::LockUnavailable)
}
