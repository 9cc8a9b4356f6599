//! The waiting room: a fair line in front of an event's seats.
//!
//! - **Truth in Postgres** (`db::queue`): tickets, their ranks and statuses, and each queue's
//!   pacing state. It survives the loss of any instance and of Redis.
//! - **Fair order.** Tickets taken before `on_sale_at` have no rank until the *draw*: the first
//!   pacing round after `on_sale_at` ranks them in a uniformly random order (Postgres's
//!   `random()`), then those who joined later in order of arrival. A ticket taken after the
//!   draw gets the next rank at once. Joining again returns the same ticket, for good, so
//!   leaving and rejoining cannot buy a better place.
//! - **Pacing without a leader.** Every instance (`crate::jobs`) runs a round of `db::queue::pace` every
//!   `QUEUE_PACE_INTERVAL_MS`; a round for one event locks that event's `queue_state` row with
//!   `for update skip locked`, so only one instance paces an event at a time and a killed
//!   instance's round simply rolls back. Admissions come from a token bucket refilled at
//!   `admit_per_minute` by Postgres's clock (so how many instances pace, and how often, does
//!   not change the rate), and never take the admitted-and-unfinished count past
//!   `max_active_shoppers`.
//! - **Admission tokens** bind ticket, event, user and expiry with HMAC-SHA256 under the event's
//!   own random secret (in `queue_state`, which every instance keeps in memory), so a hold
//!   verifies its `Admission-Token` without a database read. The claim's statement then checks,
//!   in the same statement that takes the seats, that the ticket is still admitted (a booking
//!   confirmed or an admission left ends it before the token's expiry).
//! - **Cheap polls** ([`Board`]): each instance keeps every open queue's state (refreshed by its
//!   pacing round) and the tickets it has answered for. A waiting ticket's position is its rank
//!   minus the highest rank admitted so far, computed in memory; Postgres is read only when the
//!   answer may have changed status (the ticket's rank has been reached, the draw happened, an
//!   admission's answer is older than two seconds) or the ticket is not in memory yet. A
//!   position may be stale by one pacing interval, and over-counts by the people ahead who
//!   left the line (and by ranks lost to a failed join): it never says you are nearer than you
//!   are.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use hmac::{KeyInit, Mac};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::db::queue::{self as rows, QueueRow, TicketRow};

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

/// The header a hold or direct booking carries its admission in.
pub const ADMISSION_HEADER: &str = "admission-token";

/// A new random secret for an event's admission tokens.
pub fn new_secret() -> [u8; 32] {
    rand::random()
}

fn mac(secret: &[u8], payload: &[u8], user_id: &str) -> HmacSha256 {
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(payload);
    mac.update(user_id.as_bytes());
    mac
}

/// `v1.` + base64url(ticket ‖ event ‖ expiry as big-endian Unix seconds) + `.` +
/// base64url(HMAC-SHA256(secret, that payload ‖ user id)).
pub fn admission_token(secret: &[u8], ticket: &TicketRow, expires_at: DateTime<Utc>) -> String {
    let mut payload = Vec::with_capacity(40);
    payload.extend_from_slice(ticket.id.as_bytes());
    payload.extend_from_slice(ticket.event_id.as_bytes());
    payload.extend_from_slice(&expires_at.timestamp().to_be_bytes());
    let tag = mac(secret, &payload, &ticket.user_id).finalize().into_bytes();
    format!("v1.{}.{}", URL_SAFE_NO_PAD.encode(&payload), URL_SAFE_NO_PAD.encode(tag))
}

/// The ticket a token admits `user_id` to `event_id` with, if it is genuine and unexpired.
pub fn verify_token(secret: &[u8], token: &str, event_id: Uuid, user_id: &str, now: DateTime<Utc>) -> Option<Uuid> {
    if token.len() > 200 {
        return None;
    }
    let mut parts = token.split('.');
    let (Some("v1"), Some(payload), Some(tag), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return None;
    };
    let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    if payload.len() != 40 {
        return None;
    }
    mac(secret, &payload, user_id).verify_slice(&tag).ok()?;
    let ticket = Uuid::from_slice(&payload[..16]).ok()?;
    let event = Uuid::from_slice(&payload[16..32]).ok()?;
    let expires = i64::from_be_bytes(payload[32..40].try_into().ok()?);
    (event == event_id && expires > now.timestamp()).then_some(ticket)
}

#[derive(Clone)]
struct Cached {
    ticket: Arc<TicketRow>,
    read_at: Instant,
}

/// This instance's memory of the open queues and of the tickets it has answered for.
pub struct Board {
    queues: RwLock<HashMap<Uuid, Arc<QueueRow>>>,
    tickets: moka::sync::Cache<Uuid, Cached>,
}

/// How long a waiting ticket's answer is trusted without a new reason to re-read it (it may have
/// left through another instance).
const WAITING_TRUST: Duration = Duration::from_secs(30);
/// How long an admission's answer is trusted (a booking through another instance ends it).
const ADMITTED_TRUST: Duration = Duration::from_secs(2);

impl Default for Board {
    fn default() -> Self {
        Self {
            queues: RwLock::new(HashMap::new()),
            tickets: moka::sync::Cache::builder().max_capacity(500_000).time_to_live(WAITING_TRUST).build(),
        }
    }
}

impl Board {
    /// The open queues as just read from Postgres. Answers the events whose draw this instance
    /// sees for the first time (their tickets' ranks are worth learning in one read).
    pub fn replace(&self, queues: Vec<QueueRow>) -> Vec<Uuid> {
        let mut map = self.queues.write().unwrap_or_else(|e| e.into_inner());
        let newly_drawn = queues
            .iter()
            .filter(|q| q.drawn && !map.get(&q.event_id).is_some_and(|known| known.drawn))
            .map(|q| q.event_id)
            .collect();
        *map = queues.into_iter().map(|q| (q.event_id, Arc::new(q))).collect();
        newly_drawn
    }

    /// Gives the remembered tickets their ranks, as read after a draw.
    pub fn learn_ranks(&self, ranks: &[(Uuid, i64)]) {
        for (id, rank) in ranks {
            if let Some(cached) = self.tickets.get(id)
                && cached.ticket.status == "waiting"
                && cached.ticket.rank.is_none()
            {
                let ticket = TicketRow { rank: Some(*rank), ..(*cached.ticket).clone() };
                self.tickets.insert(*id, Cached { ticket: Arc::new(ticket), read_at: cached.read_at });
            }
        }
    }

    /// The event's open queue, as of the last pacing round (None: no queue, or not known yet).
    pub fn open(&self, event_id: Uuid) -> Option<Arc<QueueRow>> {
        self.queues.read().unwrap_or_else(|e| e.into_inner()).get(&event_id).cloned()
    }

    /// The event's queue from memory, or else from Postgres (enabled or not). An open queue
    /// read here is remembered until the next pacing round replaces the lot.
    pub async fn queue<'e>(
        &self,
        db: impl sqlx::PgExecutor<'e>,
        event_id: Uuid,
    ) -> Result<Option<Arc<QueueRow>>, sqlx::Error> {
        if let Some(queue) = self.open(event_id) {
            return Ok(Some(queue));
        }
        let queue = rows::queue(db, event_id).await?.map(Arc::new);
        if let Some(queue) = queue.as_ref().filter(|q| q.enabled && q.starts_at > Utc::now()) {
            self.queues.write().unwrap_or_else(|e| e.into_inner()).insert(event_id, queue.clone());
        }
        Ok(queue)
    }

    pub fn remember(&self, ticket: TicketRow) -> Arc<TicketRow> {
        let ticket = Arc::new(ticket);
        self.tickets.insert(ticket.id, Cached { ticket: ticket.clone(), read_at: Instant::now() });
        ticket
    }

    pub fn forget(&self, ticket_id: Uuid) {
        self.tickets.invalidate(&ticket_id);
    }

    /// A ticket from memory, when what memory says cannot have changed (see the module's notes);
    /// None: ask Postgres ([`Board::read_ticket`]).
    pub fn remembered(&self, ticket_id: Uuid) -> Option<Arc<TicketRow>> {
        let cached = self.tickets.get(&ticket_id).filter(|cached| self.still_true(cached))?;
        metrics::counter!("holdfast_queue_polls_total", "source" => "memory").increment(1);
        Some(cached.ticket)
    }

    /// A ticket read from Postgres, and remembered.
    pub async fn read_ticket(&self, db: &PgPool, ticket_id: Uuid) -> Result<Option<Arc<TicketRow>>, sqlx::Error> {
        metrics::counter!("holdfast_queue_polls_total", "source" => "database").increment(1);
        Ok(rows::find(db, ticket_id).await?.map(|t| self.remember(t)))
    }

    fn still_true(&self, cached: &Cached) -> bool {
        let ticket = &cached.ticket;
        match ticket.status.as_str() {
            "waiting" => match (self.open(ticket.event_id), ticket.rank) {
                (Some(queue), Some(rank)) => rank > queue.admitted_through,
                (Some(queue), None) => !queue.drawn,
                // The queue closed (or this instance has not read it yet): ask Postgres.
                (None, _) => false,
            },
            "admitted" => cached.read_at.elapsed() < ADMITTED_TRUST,
            // expired, booked, left: final.
            _ => true,
        }
    }
}

/// A ticket as its owner sees it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TicketView {
    pub ticket_id: Uuid,
    pub event_id: Uuid,
    /// `waiting`, `admitted` (may hold seats until `admission_expires_at`), or `expired` (the
    /// ticket is done; `ended` says how).
    #[schema(pattern = "^(waiting|admitted|expired)$")]
    pub status: &'static str,
    /// For a waiting ticket, its place in line (1: next). Null before the draw (the ticket was
    /// taken before on-sale: the order is drawn at `on_sale_at`), and once not waiting.
    pub position: Option<i64>,
    /// A rough wait, from the position and `admit_per_minute` (plus the time to on-sale).
    pub estimated_wait_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission_expires_at: Option<DateTime<Utc>>,
    /// For an admitted ticket: send it as the `Admission-Token` header of holds and bookings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub admission_token: Option<String>,
    /// For an expired ticket: `expired` (the admission ran out), `booked` (a booking was
    /// confirmed) or `left`.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^(expired|booked|left)$")]
    pub ended: Option<&'static str>,
    pub joined_at: DateTime<Utc>,
}

/// The ticket's answer, and how many seconds until it is worth asking again.
pub fn view(ticket: &TicketRow, queue: Option<&QueueRow>, now: DateTime<Utc>) -> (TicketView, u64) {
    let mut view = TicketView {
        ticket_id: ticket.id,
        event_id: ticket.event_id,
        status: "expired",
        position: None,
        estimated_wait_seconds: None,
        admission_expires_at: None,
        admission_token: None,
        ended: None,
        joined_at: ticket.joined_at,
    };
    let retry;
    match ticket.status.as_str() {
        "waiting" => {
            view.status = "waiting";
            let until_sale = queue.and_then(|q| q.on_sale_at).map_or(0, |at| (at - now).num_seconds().max(0));
            let position = match (queue, ticket.rank) {
                (Some(q), Some(rank)) => Some((rank - q.admitted_through).max(1)),
                _ => None,
            };
            view.position = position;
            view.estimated_wait_seconds = match (queue, position) {
                // Admissions paused: no estimate.
                (Some(q), Some(_)) if q.admit_per_minute == 0 => None,
                (Some(q), Some(p)) => {
                    let rate = i64::from(q.admit_per_minute);
                    Some(until_sale + (p * 60 + rate - 1) / rate)
                }
                (Some(_), None) => Some(until_sale),
                (None, _) => None,
            };
            retry = match view.estimated_wait_seconds {
                Some(wait) => (wait / 5).clamp(1, 30) as u64,
                None => 10,
            };
        }
        "admitted" if ticket.admission_expires_at.is_some_and(|at| at > now) => {
            let expires = ticket.admission_expires_at.unwrap_or(now);
            view.status = "admitted";
            view.position = None;
            view.estimated_wait_seconds = Some(0);
            view.admission_expires_at = Some(expires);
            view.admission_token = queue.map(|q| admission_token(&q.secret, ticket, expires));
            retry = (expires - now).num_seconds().clamp(1, 30) as u64;
        }
        status => {
            view.ended = Some(match status {
                "booked" => "booked",
                "left" => "left",
                _ => "expired",
            });
            view.admission_expires_at = ticket.admission_expires_at;
            retry = 60;
        }
    }
    (view, retry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(user: &str) -> TicketRow {
        TicketRow {
            id: Uuid::now_v7(),
            event_id: Uuid::now_v7(),
            user_id: user.to_owned(),
            joined_at: Utc::now(),
            rank: Some(1),
            status: "admitted".into(),
            admission_expires_at: None,
        }
    }

    #[test]
    fn a_token_admits_its_user_to_its_event_until_it_expires() {
        let secret = new_secret();
        let t = ticket("alice");
        let now = Utc::now();
        let token = admission_token(&secret, &t, now + chrono::Duration::seconds(60));
        assert_eq!(verify_token(&secret, &token, t.event_id, "alice", now), Some(t.id));
        assert_eq!(verify_token(&secret, &token, t.event_id, "bob", now), None, "another user");
        assert_eq!(verify_token(&secret, &token, Uuid::now_v7(), "alice", now), None, "another event");
        assert_eq!(verify_token(&new_secret(), &token, t.event_id, "alice", now), None, "another secret");
        assert_eq!(verify_token(&secret, &token, t.event_id, "alice", now + chrono::Duration::seconds(61)), None);
        let mut forged = token.clone();
        forged.replace_range(5..6, if &token[5..6] == "A" { "B" } else { "A" });
        assert_eq!(verify_token(&secret, &forged, t.event_id, "alice", now), None, "payload changed");
        for junk in ["", "v1", "v1..", "v2.a.b", "v1.!!.??", &"v1.".repeat(100)] {
            assert_eq!(verify_token(&secret, junk, t.event_id, "alice", now), None, "{junk}");
        }
    }
}
