//! Seats that are contended right now (one of their requests was refused, or found their lock
//! taken), remembered per instance for a moment.
//!
//! Claims for a hot seat are gathered into batched statements that probe the seat once,
//! settling every claim in the batch at once when it is taken; a claim for a cold seat stays a
//! plain insert, so ordinary traffic pays nothing for the probe or the batching. Being wrong
//! either way is harmless: a cold seat that is taken is refused by the transaction, a hot seat
//! that is free is claimed.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

pub struct HotSeats {
    until: Mutex<HashMap<Uuid, Instant>>,
    ttl: Duration,
    capacity: usize,
}

impl Default for HotSeats {
    fn default() -> Self {
        Self::new(Duration::from_secs(2), 10_000)
    }
}

impl HotSeats {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self { until: Mutex::new(HashMap::new()), ttl, capacity }
    }

    pub fn mark(&self, seats: &[Uuid]) {
        self.mark_at(seats, Instant::now());
    }

    pub fn any_hot(&self, seats: &[Uuid]) -> bool {
        self.any_hot_at(seats, Instant::now())
    }

    fn mark_at(&self, seats: &[Uuid], now: Instant) {
        let mut until = self.until.lock().expect("not poisoned");
        if until.len() + seats.len() > self.capacity {
            until.retain(|_, t| *t > now);
            if until.len() + seats.len() > self.capacity {
                until.clear(); // a flood of distinct hot seats: forget, do not grow
            }
        }
        for seat in seats {
            until.insert(*seat, now + self.ttl);
        }
    }

    fn any_hot_at(&self, seats: &[Uuid], now: Instant) -> bool {
        let until = self.until.lock().expect("not poisoned");
        seats.iter().any(|s| until.get(s).is_some_and(|t| *t > now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marked_seat_is_hot_until_its_ttl_passes() {
        let hot = HotSeats::new(Duration::from_secs(2), 10);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let t0 = Instant::now();
        assert!(!hot.any_hot_at(&[a], t0));
        hot.mark_at(&[a], t0);
        assert!(hot.any_hot_at(&[b, a], t0 + Duration::from_millis(1999)));
        assert!(!hot.any_hot_at(&[b], t0));
        assert!(!hot.any_hot_at(&[a], t0 + Duration::from_secs(2)));
    }

    #[test]
    fn it_never_grows_past_its_capacity() {
        let hot = HotSeats::new(Duration::from_secs(60), 3);
        hot.mark(&[Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3)]);
        hot.mark(&[Uuid::from_u128(4)]);
        assert!(hot.until.lock().unwrap().len() <= 3);
        assert!(hot.any_hot(&[Uuid::from_u128(4)]));
    }
}
