//! Each instance's memory of the seat maps best-available holds choose from, so that choosing
//! costs no database read (issue 13, part 3).
//!
//! An event's seats (id, section, row, number, price) never change after it is created: they
//! are read once. Which seats are free is a copy that is
//! - kept current by the event's live stream: the instance's tailer of the change log (see
//!   `crate::streams`) hands every `seats.changed` of the event, committed through any instance,
//!   to the copy within milliseconds of its commit;
//! - refreshed from Postgres in the background once it is older than [`REFRESH`] (one read of
//!   the free seats' ids: the safety net for a missed message), and
//! - updated at once by this instance's own choices: the seats a request chose are taken in
//!   memory before its transaction runs, so requests on one instance choose different blocks
//!   instead of racing each other for one. Such a mark outlives a refresh that started before
//!   it (for [`MARK_KEEP`]), since that read may not see the claim yet. A request that does
//!   not commit its choice (its key was another request's, its lock or transaction failed)
//!   gives the seats back at once ([`Marked::give_back`]), unless this instance heard meanwhile
//!   that someone else took them.
//!
//! The copy may be stale (another instance's claims reach it as fast as the stream does, and
//! within [`REFRESH`] at worst); the claim's guard in Postgres decides as always, and a request whose block was
//! taken meanwhile chooses again inside its transaction from what Postgres shows. A memory that
//! finds nothing to offer is not trusted: the choice is then made from Postgres.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use rand::Rng;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::events;
use crate::domain::best_available::{self, Choice, Spot};
use crate::streams::Hub;

/// How old the copy of which seats are free may get before a request refreshes it.
pub const REFRESH: Duration = Duration::from_secs(2);
/// How long this instance's own marks outlive refreshes that may not see them yet.
const MARK_KEEP: Duration = Duration::from_secs(5);

struct SeatInfo {
    id: Uuid,
    section: String,
    row: String,
    number: i32,
    price_cents: i64,
}

/// A seat this instance chose (or found taken), for one request.
struct Mark {
    at: usize,
    when: Instant,
    /// The request's own marks share one; see [`Marked`].
    token: u64,
    /// A change or a refresh since said the seat is taken: giving it back leaves it taken.
    heard_taken: bool,
}

/// The seats one request took in this instance's memory, to give back if it does not commit.
pub struct Marked {
    seats: Weak<EventSeats>,
    token: u64,
}

impl Marked {
    /// The request's choice did not commit: its seats are offered again (those no other mark
    /// holds, and that no change or refresh since has said are taken).
    pub fn give_back(self) {
        if let Some(seats) = self.seats.upgrade() {
            seats.give_back(self.token);
        }
    }
}

static NEXT_TOKEN: AtomicU64 = AtomicU64::new(1);

struct Free {
    free: Vec<bool>,
    /// Seats this instance chose, and when.
    marked: Vec<Mark>,
    read_at: Instant,
    refreshing: bool,
}

/// One event's seat map, in map order, and which seats are free as far as this instance knows.
pub struct EventSeats {
    seats: Vec<SeatInfo>,
    position: HashMap<Uuid, usize>,
    state: Mutex<Free>,
}

impl EventSeats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Free> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Chooses from the first `window` free seats that match (all of them when none fits there)
    /// and takes the seats chosen in memory. `Choice::Nothing` means only "nothing here".
    pub fn choose(
        self: &Arc<Self>,
        section: Option<&str>,
        max_price_cents: Option<i64>,
        quantity: usize,
        allow_split: bool,
        window: usize,
        rng: &mut impl Rng,
    ) -> (Choice, Option<Marked>) {
        let mut state = self.lock();
        let mut choice = Choice::Nothing { free: 0 };
        for limit in [window, usize::MAX] {
            let spots: Vec<Spot> = self
                .seats
                .iter()
                .zip(&state.free)
                .filter(|(s, free)| {
                    **free
                        && section.is_none_or(|x| s.section == x)
                        && max_price_cents.is_none_or(|max| s.price_cents <= max)
                })
                .take(limit)
                .map(|(s, _)| Spot {
                    id: s.id,
                    section: s.section.clone(),
                    row: s.row.clone(),
                    number: s.number,
                    free: true,
                })
                .collect();
            choice = best_available::choose(&spots, quantity, allow_split, rng);
            if !matches!(choice, Choice::Nothing { .. }) || spots.len() < limit {
                break;
            }
        }
        let marked = match &choice {
            Choice::Block(seats) | Choice::Split(seats) => Some(self.mark(&mut state, seats)),
            Choice::Nothing { .. } => None,
        };
        (choice, marked)
    }

    fn mark(self: &Arc<Self>, state: &mut Free, seat_ids: &[Uuid]) -> Marked {
        let (when, token) = (Instant::now(), NEXT_TOKEN.fetch_add(1, Ordering::Relaxed));
        for id in seat_ids {
            if let Some(&at) = self.position.get(id) {
                state.free[at] = false;
                state.marked.push(Mark { at, when, token, heard_taken: false });
            }
        }
        Marked { seats: Arc::downgrade(self), token }
    }

    /// Seats chosen (from Postgres, or again inside a transaction), or found taken there.
    pub fn mark_taken(self: &Arc<Self>, seat_ids: &[Uuid]) -> Marked {
        let mut state = self.lock();
        self.mark(&mut state, seat_ids)
    }

    fn give_back(&self, token: u64) {
        let mut state = self.lock();
        let (mine, others): (Vec<Mark>, Vec<Mark>) =
            std::mem::take(&mut state.marked).into_iter().partition(|m| m.token == token);
        state.marked = others;
        for mark in mine {
            if !mark.heard_taken && !state.marked.iter().any(|m| m.at == mark.at) {
                state.free[mark.at] = true;
            }
        }
    }

    /// A `seats.changed` message's `data` (`{"seats": [{"id", "status", ...}]}`): what it says is
    /// free becomes free (unless this instance chose the seat within [`MARK_KEEP`]: its claim
    /// may not have committed yet), the rest taken.
    fn apply_change(&self, data: &str) {
        let Ok(data) = serde_json::from_str::<serde_json::Value>(data) else { return };
        let Some(changed) = data.get("seats").and_then(serde_json::Value::as_array) else { return };
        let mut state = self.lock();
        let recent = Instant::now().checked_sub(MARK_KEEP);
        for seat in changed {
            let id = seat.get("id").and_then(serde_json::Value::as_str).and_then(|id| id.parse::<Uuid>().ok());
            let Some(&at) = id.as_ref().and_then(|id| self.position.get(id)) else { continue };
            let free = seat.get("status").and_then(serde_json::Value::as_str) == Some("AVAILABLE");
            let mut chosen_here = false;
            for mark in state.marked.iter_mut().filter(|m| m.at == at) {
                mark.heard_taken = !free;
                chosen_here |= recent.is_none_or(|r| mark.when >= r);
            }
            state.free[at] = free && !chosen_here;
        }
    }

    /// True (once) when the copy is old enough to refresh and no refresh is under way.
    fn begin_refresh(&self) -> bool {
        let mut state = self.lock();
        if state.refreshing || state.read_at.elapsed() < REFRESH {
            return false;
        }
        state.refreshing = true;
        true
    }

    /// A read of the free seats that started at `started`.
    fn refreshed(&self, free_ids: Option<Vec<Uuid>>, started: Instant) {
        let mut state = self.lock();
        state.refreshing = false;
        let Some(free_ids) = free_ids else { return };
        state.free.iter_mut().for_each(|f| *f = false);
        for id in free_ids {
            if let Some(&at) = self.position.get(&id) {
                state.free[at] = true;
            }
        }
        let keep_from = started.checked_sub(MARK_KEEP).unwrap_or(started);
        state.marked.retain(|m| m.when >= keep_from);
        let mut marked = std::mem::take(&mut state.marked);
        for mark in &mut marked {
            // Not free in a read that started after the mark: someone's claim (if it is ours,
            // it committed, and nothing is given back).
            mark.heard_taken |= !state.free[mark.at] && mark.when <= started;
            state.free[mark.at] = false;
        }
        state.marked = marked;
        state.read_at = started;
    }
}

/// The seat maps of the events best-available holds were asked of lately.
pub struct SeatIndex {
    events: moka::sync::Cache<Uuid, Arc<EventSeats>>,
}

impl Default for SeatIndex {
    fn default() -> Self {
        Self { events: moka::sync::Cache::builder().max_capacity(64).time_to_idle(Duration::from_secs(600)).build() }
    }
}

/// Follows the event's live stream for as long as its copy is kept, applying each
/// `seats.changed` (subscribing again after an overflow or before the hub has started).
fn follow(hub: Arc<Hub>, seats: Weak<EventSeats>, event_id: Uuid) {
    tokio::spawn(async move {
        while seats.strong_count() > 0 {
            let Ok(mut subscription) = hub.subscribe(event_id) else {
                tokio::time::sleep(REFRESH).await;
                continue;
            };
            loop {
                let message = tokio::select! {
                    message = subscription.rx.recv() => message,
                    // A copy dropped from the cache stops its follower within a minute.
                    _ = tokio::time::sleep(Duration::from_secs(60)) => {
                        if seats.strong_count() == 0 { return } else { continue }
                    }
                };
                let Some(message) = message else { break };
                let Some(seats) = seats.upgrade() else { return };
                if message.event == "seats.changed" {
                    seats.apply_change(&message.data);
                }
            }
        }
    });
}

impl SeatIndex {
    /// The event's seats from memory (refreshed in the background when due), or read now (and
    /// then followed on `hub`). None: no such event.
    pub async fn event(
        &self,
        db: &PgPool,
        hub: &Arc<Hub>,
        event_id: Uuid,
    ) -> Result<Option<Arc<EventSeats>>, sqlx::Error> {
        if let Some(seats) = self.events.get(&event_id) {
            if seats.begin_refresh() {
                let (db, seats) = (db.clone(), seats.clone());
                tokio::spawn(async move {
                    let started = Instant::now();
                    let ids = events::free_seat_ids(&db, event_id).await;
                    if let Err(err) = &ids {
                        tracing::warn!(%event_id, error = %err, "refreshing the free seats failed; will retry");
                    }
                    seats.refreshed(ids.ok(), started);
                });
            }
            return Ok(Some(seats));
        }
        let started = Instant::now();
        let rows = events::seat_map(db, event_id).await?;
        if rows.is_empty() {
            return Ok(None);
        }
        let mut seats = Vec::with_capacity(rows.len());
        let mut free = Vec::with_capacity(rows.len());
        for row in rows {
            free.push(row.free);
            seats.push(SeatInfo {
                id: row.id,
                section: row.section,
                row: row.row_label,
                number: row.number,
                price_cents: row.price_cents,
            });
        }
        let position = seats.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
        let state = Mutex::new(Free { free, marked: Vec::new(), read_at: started, refreshing: false });
        let seats = Arc::new(EventSeats { seats, position, state });
        // Two requests may read it at once; the first one stored wins, the other's is dropped.
        let entry = self.events.entry(event_id).or_insert(seats);
        if entry.is_fresh() {
            follow(hub.clone(), Arc::downgrade(entry.value()), event_id);
        }
        Ok(Some(entry.into_value()))
    }

    /// The event's copy, if this instance keeps one (no read).
    pub fn cached(&self, event_id: Uuid) -> Option<Arc<EventSeats>> {
        self.events.get(&event_id)
    }

    /// Marks seats taken in the event's copy, if this instance keeps one.
    pub fn mark_taken(&self, event_id: Uuid, seat_ids: &[Uuid]) -> Option<Marked> {
        self.events.get(&event_id).map(|seats| seats.mark_taken(seat_ids))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: usize) -> Arc<EventSeats> {
        let seats: Vec<SeatInfo> = (0..n)
            .map(|i| SeatInfo {
                id: Uuid::from_u128(i as u128 + 1),
                section: "A".into(),
                row: "1".into(),
                number: i as i32 + 1,
                price_cents: 100,
            })
            .collect();
        let position = seats.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
        let free = Free { free: vec![true; n], marked: Vec::new(), read_at: Instant::now(), refreshing: false };
        Arc::new(EventSeats { seats, position, state: Mutex::new(free) })
    }

    fn free(seats: &EventSeats) -> Vec<bool> {
        seats.lock().free.clone()
    }

    fn change(id: u128, status: &str) -> String {
        serde_json::json!({ "seats": [{ "id": Uuid::from_u128(id), "status": status, "version": 1 }] }).to_string()
    }

    #[test]
    fn seats_given_back_are_free_unless_someone_else_took_them_meanwhile() {
        let seats = event(3);
        let ids = [Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3)];
        // Given back untouched: free again.
        let marked = seats.mark_taken(&ids[..1]);
        assert_eq!(free(&seats), [false, true, true]);
        marked.give_back();
        assert_eq!(free(&seats), [true, true, true]);
        // Heard taken by someone else meanwhile: stays taken.
        let marked = seats.mark_taken(&ids[1..2]);
        seats.apply_change(&change(2, "HELD"));
        marked.give_back();
        assert_eq!(free(&seats), [true, false, true]);
        // Another request's mark on the same seat keeps it taken; a later free change is heard.
        let first = seats.mark_taken(&ids[2..]);
        let second = seats.mark_taken(&ids[2..]);
        seats.apply_change(&change(3, "HELD"));
        seats.apply_change(&change(3, "AVAILABLE"));
        first.give_back();
        assert_eq!(free(&seats), [true, false, false]);
        second.give_back();
        assert_eq!(free(&seats), [true, false, true]);
        // A refresh that started after the mark and found the seat taken counts as heard.
        let marked = seats.mark_taken(&ids[..1]);
        seats.refreshed(Some(vec![ids[2]]), Instant::now());
        marked.give_back();
        assert_eq!(free(&seats), [false, false, true]);
    }
}
