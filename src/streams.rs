//! Live availability for many clients: one tailer per instance follows the change log's public
//! events (seats, nights, slots) and fans them out to the stream clients of this instance.
//!
//! - **Wake-ups.** After a commit, the instance that wrote sends one `NOTIFY "holdfast-changes"`
//!   (coalesced: at most one per [`NOTIFY_EVERY`]) from a statement of its own, outside the
//!   business transaction: a NOTIFY inside it would make every writing commit take Postgres's
//!   global notify lock. Every instance LISTENs on one connection and wakes its tailer; a lost
//!   notification (a crash between commit and NOTIFY, a change made in SQL) is caught by the
//!   tailer's poll every `STREAM_POLL_INTERVAL_MS`.
//! - **Order.** The tailer reads the feed (`db::changes`): rows of transactions older than the
//!   oldest still running, in `(txid, id)` order. When rows exist that the gate still hides,
//!   it looks again within milliseconds instead of waiting for the poll.
//! - **Fan-out.** Each client has a bounded queue (`STREAM_CLIENT_BUFFER` messages). A client
//!   whose queue is full is dropped from the hub at once; its stream then sends what was queued,
//!   `event: reset`, and ends. Publishing never waits for a client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::changes::{self, ChangeRow, Position, TailRow};

/// The channel every instance listens on.
pub const CHANNEL: &str = "holdfast-changes";

/// The change types a public stream carries: availability, nothing about who.
pub const PUBLIC_TYPES: &[&str] = &["seats.changed", "nights.changed", "inventory.nights_changed", "slots.changed"];

/// An instance sends at most one NOTIFY per this long, however many commits it makes.
const NOTIFY_EVERY: Duration = Duration::from_millis(20);

/// How soon the tailer looks again when committed rows wait behind an older open transaction.
const GATED_RETRY: Duration = Duration::from_millis(10);

/// One message of a stream, rendered once for every client that gets it.
#[derive(Debug)]
pub struct Message {
    pub position: Position,
    /// The event, inventory or resource it is about.
    pub scope: Uuid,
    pub event: String,
    /// The `data:` line: the change's data (no actor, no request id).
    pub data: String,
}

impl Message {
    fn new(position: Position, scope: Uuid, event: &str, at: DateTime<Utc>, data: Option<&Value>) -> Self {
        let mut data = data.cloned().unwrap_or_else(|| serde_json::json!({}));
        if let Some(object) = data.as_object_mut() {
            object.insert("occurred_at".into(), serde_json::json!(at));
        }
        Message { position, scope, event: event.to_owned(), data: data.to_string() }
    }

    /// A public change read back from the feed (a stream's catch-up).
    pub fn from_change(row: &ChangeRow) -> Option<Self> {
        let scope = row.event_id.or(row.inventory_id).or(row.resource_id)?;
        PUBLIC_TYPES
            .contains(&row.r#type.as_str())
            .then(|| Message::new(row.position(), scope, &row.r#type, row.at, row.data.as_ref()))
    }

    /// A public change as the tailer reads it; None for every other row.
    fn from_tail(row: &TailRow) -> Option<Self> {
        let kind = row.r#type.as_deref().filter(|t| PUBLIC_TYPES.contains(t))?;
        Some(Message::new(Position { txid: row.txid, id: row.id }, row.scope_id?, kind, row.at, row.data.as_ref()))
    }
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Arc<Message>>,
    overflowed: Arc<AtomicBool>,
}

#[derive(Default)]
struct Inner {
    /// The last position the tailer published: every later message goes to the subscribers.
    position: Position,
    /// False until the tailer's first read: until then no one knows where live starts.
    started: bool,
    subscribers: HashMap<Uuid, Vec<Subscriber>>,
    next_id: u64,
}

/// This instance's stream clients, by what they follow.
pub struct Hub {
    inner: Mutex<Inner>,
    clients: AtomicUsize,
    max_clients: usize,
    buffer: usize,
    /// Set by the pipeline after each commit; the notifier turns it into a NOTIFY.
    pub written: Notify,
    /// Told when the tailer has read the feed for the first time.
    started: Notify,
}

/// Why a client cannot join now.
#[derive(Debug)]
pub enum Refused {
    /// `STREAM_MAX_CLIENTS` clients are connected to this instance.
    Full,
    /// The tailer has not read the feed yet (start-up, or the database is unreachable).
    NotStarted,
}

/// A client's place in the hub: its queue, and where the hub stood when it joined. Dropping it
/// leaves the hub.
pub struct Subscription {
    pub rx: mpsc::Receiver<Arc<Message>>,
    /// Every message after this position reaches `rx` (unless the queue overflows).
    pub joined_at: Position,
    pub overflowed: Arc<AtomicBool>,
    hub: Arc<Hub>,
    scope: Uuid,
    id: u64,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.leave(self.scope, self.id);
        // A client dropped for overflowing was counted out then.
        if !self.overflowed.swap(true, Ordering::Relaxed) {
            self.hub.count_out();
        }
    }
}

impl Hub {
    pub fn new(max_clients: usize, buffer: usize) -> Self {
        Hub {
            inner: Mutex::default(),
            clients: AtomicUsize::new(0),
            max_clients,
            buffer,
            written: Notify::new(),
            started: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Joins, waiting up to `patience` for the tailer's first read (an instance just started).
    pub async fn join(self: &Arc<Self>, scope: Uuid, patience: Duration) -> Result<Subscription, Refused> {
        let started = self.started.notified();
        match self.subscribe(scope) {
            Err(Refused::NotStarted) => {
                let _ = tokio::time::timeout(patience, started).await;
                self.subscribe(scope)
            }
            joined => joined,
        }
    }

    pub fn subscribe(self: &Arc<Self>, scope: Uuid) -> Result<Subscription, Refused> {
        let mut inner = self.lock();
        if !inner.started {
            return Err(Refused::NotStarted);
        }
        let open = self.clients.fetch_add(1, Ordering::Relaxed) + 1;
        if open > self.max_clients {
            self.clients.fetch_sub(1, Ordering::Relaxed);
            return Err(Refused::Full);
        }
        metrics::gauge!("holdfast_stream_clients").set(open as f64);
        let (tx, rx) = mpsc::channel(self.buffer);
        let overflowed = Arc::new(AtomicBool::new(false));
        inner.next_id += 1;
        let id = inner.next_id;
        inner.subscribers.entry(scope).or_default().push(Subscriber { id, tx, overflowed: overflowed.clone() });
        Ok(Subscription { rx, joined_at: inner.position, overflowed, hub: self.clone(), scope, id })
    }

    fn count_out(&self) {
        let open = self.clients.fetch_sub(1, Ordering::Relaxed) - 1;
        metrics::gauge!("holdfast_stream_clients").set(open as f64);
    }

    fn leave(&self, scope: Uuid, id: u64) {
        let mut inner = self.lock();
        if let Some(subscribers) = inner.subscribers.get_mut(&scope) {
            subscribers.retain(|s| s.id != id);
            if subscribers.is_empty() {
                inner.subscribers.remove(&scope);
            }
        }
    }

    /// Hands each message to the subscribers of its scope, never waiting: a full queue drops
    /// its subscriber (its stream ends with `event: reset`). Then the hub stands at `upto`.
    fn publish(&self, messages: Vec<Message>, upto: Position) {
        let mut inner = self.lock();
        for message in messages {
            let message = Arc::new(message);
            if let Some(subscribers) = inner.subscribers.get_mut(&message.scope) {
                subscribers.retain(|s| match s.tx.try_send(message.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        // Counted out now: its connection may stay stuck behind a client that
                        // does not read until the connection dies, but it takes no slot.
                        if !s.overflowed.swap(true, Ordering::Relaxed) {
                            self.count_out();
                        }
                        metrics::counter!("holdfast_stream_resets_total", "reason" => "slow_client").increment(1);
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => false,
                });
            }
        }
        inner.position = inner.position.max(upto);
        if !inner.started {
            inner.started = true;
            self.started.notify_waiters();
        }
    }

    pub fn position(&self) -> Position {
        self.lock().position
    }
}

/// Starts this instance's notifier, listener and tailer. They stop when `shutdown` is cancelled.
pub fn spawn(
    hub: Arc<Hub>,
    db: PgPool,
    listen_db: PgPool,
    poll: Duration,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let woken = Arc::new(Notify::new());
    vec![
        tokio::spawn(notify_loop(hub.clone(), db.clone(), shutdown.clone())),
        tokio::spawn(listen_loop(listen_db, woken.clone(), shutdown.clone())),
        tokio::spawn(tail_loop(hub, db, woken, poll, shutdown)),
    ]
}

/// Turns this instance's commits into NOTIFYs, at most one per [`NOTIFY_EVERY`].
async fn notify_loop(hub: Arc<Hub>, db: PgPool, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = hub.written.notified() => {}
        }
        if let Err(err) = sqlx::query("select pg_notify($1, '')").bind(CHANNEL).execute(&db).await {
            tracing::debug!(error = %err, "could not announce a change; the pollers will find it");
        }
        tokio::time::sleep(NOTIFY_EVERY).await;
    }
}

/// LISTENs on one connection (reconnecting as needed) and wakes the tailer on every notification.
async fn listen_loop(listen_db: PgPool, woken: Arc<Notify>, shutdown: CancellationToken) {
    loop {
        let listening = async {
            let mut listener = PgListener::connect_with(&listen_db).await?;
            listener.listen(CHANNEL).await?;
            // Anything committed while we were not listening: look now.
            woken.notify_one();
            loop {
                listener.recv().await?;
                woken.notify_one();
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            result = listening => {
                if let Err(err) = result {
                    tracing::warn!(error = %err, "change listener lost its connection; reconnecting");
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Rows the tailer reads per statement.
const TAIL_PAGE: i64 = 1000;

/// Follows the change log from where the feed stands at start-up, publishing each page's public
/// changes to the hub. One statement per page, on the table itself; at most one pass per
/// [`NOTIFY_EVERY`], however often it is woken.
async fn tail_loop(hub: Arc<Hub>, db: PgPool, woken: Arc<Notify>, poll: Duration, shutdown: CancellationToken) {
    let mut cursor = None;
    // Start at once; then, while rows wait behind an open transaction, look again soon,
    // backing off towards the poll interval if it stays open.
    let mut gated_wait = Some(Duration::ZERO);
    loop {
        let wait = gated_wait.unwrap_or(poll);
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = woken.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
        let result = async {
            let mut from = match cursor {
                Some(position) => position,
                None => changes::readable_end(&db).await?,
            };
            loop {
                let rows = changes::tail(&db, from, TAIL_PAGE).await?;
                let now = Utc::now();
                let mut messages = Vec::new();
                for row in &rows {
                    if let Some(message) = Message::from_tail(row) {
                        let delay = (now - row.at).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
                        metrics::histogram!("holdfast_stream_fanout_delay_seconds").record(delay);
                        messages.push(message);
                    }
                }
                if let Some(last) = rows.last() {
                    from = Position { txid: last.txid, id: last.id };
                }
                hub.publish(messages, from);
                cursor = Some(from);
                if (rows.len() as i64) < TAIL_PAGE {
                    break;
                }
            }
            gated_wait = match (changes::hidden_after(&db, from).await?, gated_wait) {
                (false, _) => None,
                (true, Some(wait)) if !wait.is_zero() => Some((wait * 2).min(poll)),
                (true, _) => Some(GATED_RETRY),
            };
            Ok::<(), sqlx::Error>(())
        }
        .await;
        if let Err(err) = result {
            tracing::warn!(error = %err, "change tailer could not read the change log; will retry");
            gated_wait = None;
        }
        tokio::time::sleep(NOTIFY_EVERY).await;
    }
}
