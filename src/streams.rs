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

use axum::body::Bytes;
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db::changes::{self, ChangeRow, Position, TailRow, is_public};

/// The channel every instance listens on.
pub const CHANNEL: &str = "holdfast-changes";

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
    /// The whole Server-Sent Events message (`id:`, `event:`, `data:`), rendered once: each client's
    /// stream sends this buffer (a reference count, not a copy).
    pub frame: Bytes,
}

/// A Server-Sent Events message: `id:` (when given), `event:`, one `data:` line per line of `data`,
/// and the blank line that ends it.
pub fn sse_frame(id: Option<&str>, event: &str, data: &str) -> Bytes {
    let mut out = String::with_capacity(data.len() + event.len() + id.map_or(0, str::len) + 24);
    if let Some(id) = id {
        out.push_str("id: ");
        out.push_str(id);
        out.push('\n');
    }
    out.push_str("event: ");
    out.push_str(event);
    out.push('\n');
    for line in data.lines() {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    Bytes::from(out)
}

impl Message {
    fn new(position: Position, scope: Uuid, event: &str, at: DateTime<Utc>, data: Option<&Value>) -> Self {
        let mut data = data.cloned().unwrap_or_else(|| serde_json::json!({}));
        if let Some(object) = data.as_object_mut() {
            object.insert("occurred_at".into(), serde_json::json!(at));
        }
        let data = data.to_string();
        let frame = sse_frame(Some(&position.to_string()), event, &data);
        Message { position, scope, event: event.to_owned(), data, frame }
    }

    /// A public change read back from the feed (a stream's catch-up).
    pub fn from_change(row: &ChangeRow) -> Option<Self> {
        let scope = row.event_id.or(row.inventory_id).or(row.resource_id)?;
        is_public(&row.r#type).then(|| Message::new(row.position(), scope, &row.r#type, row.at, row.data.as_ref()))
    }

    /// The public changes among the rows of one tailer pass, in feed order. Seat and night
    /// changes of one scope and type are merged into one message (the newest version of each seat
    /// or night, with the last row's position as its id): a client receives at most one of them
    /// per pass, however many holds a stampede makes, and the versions keep the merge exact.
    /// Slot changes carry no version and are passed on one by one.
    fn from_pass(rows: &[TailRow]) -> Vec<Self> {
        struct Merged<'a> {
            position: Position,
            first_at: DateTime<Utc>,
            list: &'static str,
            items: Vec<Value>,
            index: HashMap<String, usize>,
            kind: &'a str,
            scope: Uuid,
        }
        let mut merged: Vec<Merged> = Vec::new();
        let mut messages = Vec::new();
        for row in rows {
            let (Some(kind), Some(scope)) = (row.r#type.as_deref(), row.scope_id) else { continue };
            let position = Position { txid: row.txid, id: row.id };
            let (list, key) = match kind {
                "seats.changed" => ("seats", "id"),
                "nights.changed" | "inventory.nights_changed" => ("nights", "night"),
                "slots.changed" => {
                    messages.push(Message::new(position, scope, kind, row.at, row.data.as_ref()));
                    continue;
                }
                _ => continue,
            };
            let at = merged.iter().position(|m| m.scope == scope && m.kind == kind);
            let entry = match at {
                Some(i) => &mut merged[i],
                None => {
                    merged.push(Merged {
                        position,
                        first_at: row.at,
                        list,
                        items: Vec::new(),
                        index: HashMap::new(),
                        kind,
                        scope,
                    });
                    merged.last_mut().expect("just pushed")
                }
            };
            entry.position = position;
            let items = row.data.as_ref().and_then(|d| d.get(list)).and_then(Value::as_array);
            for item in items.into_iter().flatten() {
                let id = item.get(key).map(Value::to_string).unwrap_or_default();
                let version = item.get("version").and_then(Value::as_i64).unwrap_or(i64::MIN);
                match entry.index.get(&id) {
                    Some(&i) => {
                        let held = entry.items[i].get("version").and_then(Value::as_i64).unwrap_or(i64::MIN);
                        if version >= held {
                            entry.items[i] = item.clone();
                        }
                    }
                    None => {
                        entry.index.insert(id, entry.items.len());
                        entry.items.push(item.clone());
                    }
                }
            }
        }
        for m in merged {
            let data = serde_json::json!({ m.list: m.items });
            messages.push(Message::new(m.position, m.scope, m.kind, m.first_at, Some(&data)));
        }
        messages.sort_by_key(|m| m.position);
        messages
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
                for row in rows.iter().filter(|r| r.r#type.as_deref().is_some_and(is_public)) {
                    let delay = (now - row.at).num_microseconds().unwrap_or(0).max(0) as f64 / 1e6;
                    metrics::histogram!("holdfast_stream_fanout_delay_seconds").record(delay);
                }
                let messages = Message::from_pass(&rows);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, kind: &str, scope: Uuid, data: Value) -> TailRow {
        TailRow { id, txid: 7, r#type: Some(kind.to_owned()), scope_id: Some(scope), at: Utc::now(), data: Some(data) }
    }

    #[test]
    fn a_frame_is_one_server_sent_event_whatever_its_data_holds() {
        assert_eq!(
            &sse_frame(Some("7-1"), "seats.changed", r#"{"a":1}"#)[..],
            b"id: 7-1\nevent: seats.changed\ndata: {\"a\":1}\n\n"
        );
        // A line break in the data would end the message early: each line gets its own `data:`.
        assert_eq!(
            &sse_frame(None, "reset", "one\ntwo\r\nthree")[..],
            b"event: reset\ndata: one\ndata: two\ndata: three\n\n"
        );
        // A message's frame is rendered from its own fields.
        let event = Uuid::new_v4();
        let rows = vec![row(3, "slots.changed", event, serde_json::json!({ "taken": [], "freed": [] }))];
        let message = Message::from_pass(&rows).pop().unwrap();
        assert_eq!(message.frame, sse_frame(Some("7-3"), "slots.changed", &message.data));
    }

    #[test]
    fn a_pass_merges_seat_changes_per_scope_keeping_the_newest_version() {
        let (event, other) = (Uuid::new_v4(), Uuid::new_v4());
        let seat = |id: &str, status: &str, version: i64| serde_json::json!({ "id": id, "status": status, "version": version });
        let rows = vec![
            row(
                1,
                "seats.changed",
                event,
                serde_json::json!({ "seats": [seat("a", "HELD", 1), seat("b", "HELD", 1)] }),
            ),
            row(2, "slots.changed", other, serde_json::json!({ "taken": [], "freed": [] })),
            row(3, "seats.changed", event, serde_json::json!({ "seats": [seat("a", "BOOKED", 2)] })),
            // Out of order in the feed (a transaction that got its id early): the version decides.
            row(4, "seats.changed", event, serde_json::json!({ "seats": [seat("b", "AVAILABLE", 0)] })),
            TailRow { id: 5, txid: 7, r#type: None, scope_id: None, at: Utc::now(), data: None },
        ];
        let messages = Message::from_pass(&rows);
        assert_eq!(messages.len(), 2);
        assert_eq!((messages[0].position.id, messages[0].event.as_str()), (2, "slots.changed"));
        assert_eq!((messages[1].position.id, messages[1].scope), (4, event));
        let data: Value = serde_json::from_str(&messages[1].data).unwrap();
        assert_eq!(data["seats"], serde_json::json!([seat("a", "BOOKED", 2), seat("b", "HELD", 1)]));
    }
}
