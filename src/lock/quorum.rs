//! The arithmetic of Redlock, kept free of I/O so it can be tested exhaustively.

use std::time::Duration;

/// How many nodes must agree: a strict majority.
pub fn quorum(nodes: usize) -> usize {
    nodes / 2 + 1
}

/// The clock-drift allowance: a fraction of the TTL plus 2 ms for the timer granularity
/// of Redis's key expiry.
pub fn drift(ttl: Duration, drift_factor: f64) -> Duration {
    ttl.mul_f64(drift_factor) + Duration::from_millis(2)
}

/// How long a lock acquired in `elapsed` is still safe to rely on, or `None` when nothing is left.
pub fn validity(ttl: Duration, elapsed: Duration, drift_factor: f64) -> Option<Duration> {
    ttl.checked_sub(elapsed)?.checked_sub(drift(ttl, drift_factor)).filter(|left| !left.is_zero())
}

/// What one acquisition round across all nodes amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// A majority granted every key, with validity left.
    Acquired,
    /// Enough nodes answered, but a majority could not be had because the keys are taken.
    Contended,
    /// Too few nodes answered (down, slow, or the round took the whole TTL).
    Unavailable,
}

/// Decide a round from its per-node results. `errors` counts nodes that failed or timed out;
/// the rest answered either "granted" (`granted`) or "taken".
pub fn verdict(nodes: usize, granted: usize, errors: usize, validity_left: Option<Duration>) -> Verdict {
    let needed = quorum(nodes);
    if granted >= needed {
        // A majority said yes but the round was so slow that no validity is left:
        // that is a sick quorum, not a contended key.
        return if validity_left.is_some() { Verdict::Acquired } else { Verdict::Unavailable };
    }
    if nodes.saturating_sub(errors) < needed { Verdict::Unavailable } else { Verdict::Contended }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn quorum_is_a_strict_majority() {
        assert_eq!(quorum(1), 1);
        assert_eq!(quorum(2), 2);
        assert_eq!(quorum(3), 2);
        assert_eq!(quorum(4), 3);
        assert_eq!(quorum(5), 3);
    }

    #[test]
    fn validity_subtracts_elapsed_time_and_drift() {
        // 1000 ms TTL, 1% drift: drift is 10 + 2 ms.
        assert_eq!(validity(MS(1000), MS(100), 0.01), Some(MS(888)));
        assert_eq!(validity(MS(1000), MS(988), 0.01), None);
        assert_eq!(validity(MS(1000), MS(2000), 0.01), None);
        assert_eq!(validity(MS(1000), MS(0), 0.0), Some(MS(998)));
    }

    #[test]
    fn a_majority_with_validity_left_acquires() {
        assert_eq!(verdict(3, 2, 1, Some(MS(5))), Verdict::Acquired);
        assert_eq!(verdict(3, 3, 0, Some(MS(5))), Verdict::Acquired);
        assert_eq!(verdict(1, 1, 0, Some(MS(5))), Verdict::Acquired);
    }

    #[test]
    fn a_majority_without_validity_is_unavailable() {
        assert_eq!(verdict(3, 3, 0, None), Verdict::Unavailable);
    }

    #[test]
    fn taken_keys_on_healthy_nodes_are_contention() {
        assert_eq!(verdict(3, 0, 0, Some(MS(5))), Verdict::Contended);
        assert_eq!(verdict(3, 1, 0, Some(MS(5))), Verdict::Contended);
        // One node down, one granted, one taken: two answered, which could have been a majority.
        assert_eq!(verdict(3, 1, 1, Some(MS(5))), Verdict::Contended);
    }

    #[test]
    fn too_few_answering_nodes_is_unavailability() {
        assert_eq!(verdict(3, 1, 2, Some(MS(5))), Verdict::Unavailable);
        assert_eq!(verdict(3, 0, 3, None), Verdict::Unavailable);
        assert_eq!(verdict(5, 2, 3, Some(MS(5))), Verdict::Unavailable);
        assert_eq!(verdict(1, 0, 1, None), Verdict::Unavailable);
    }
}
