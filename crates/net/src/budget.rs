//! Per-peer budgets (`spec/federation.md` §6): a token bucket per peer for the ops and signals
//! it pushes and for each kind of other sync request it makes. Sans-IO: the time is passed in.

use std::time::Instant;

use crate::NetConfig;
use crate::protocol::Request;

/// A sustained rate per second, and the burst allowed above it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    pub per_second: f64,
    pub burst: f64,
}

impl Budget {
    pub const fn new(per_second: f64, burst: f64) -> Budget {
        Budget { per_second, burst }
    }
}

/// What a peer spends a budget on: gossip (each op or signal it pushes), or a kind of other
/// sync request (both DM requests share one budget).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Traffic {
    Gossip,
    Catchup,
    Join,
    Backfill,
    Dm,
    ChannelKeys,
}

impl Traffic {
    pub(crate) const ALL: [Traffic; 6] = [
        Traffic::Gossip,
        Traffic::Catchup,
        Traffic::Join,
        Traffic::Backfill,
        Traffic::Dm,
        Traffic::ChannelKeys,
    ];

    pub(crate) fn of(request: &Request) -> Traffic {
        match request {
            Request::Push { .. } => Traffic::Gossip,
            Request::Catchup { .. } => Traffic::Catchup,
            Request::Join { .. } => Traffic::Join,
            Request::Backfill { .. } => Traffic::Backfill,
            Request::DmKeys { .. } | Request::Dms { .. } => Traffic::Dm,
            Request::ChannelKeys { .. } => Traffic::ChannelKeys,
        }
    }
}

impl NetConfig {
    pub(crate) fn budget(&self, traffic: Traffic) -> Budget {
        match traffic {
            Traffic::Gossip => Budget::new(self.peer_rate, self.peer_burst),
            Traffic::Catchup => self.catchup_budget,
            Traffic::Join => self.join_budget,
            Traffic::Backfill => self.backfill_budget,
            Traffic::Dm => self.dm_budget,
            Traffic::ChannelKeys => self.channel_key_budget,
        }
    }
}

/// Tokens left, refilled at the budget's rate since `last`; a new bucket starts full.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Bucket {
    pub(crate) fn full(budget: Budget, now: Instant) -> Bucket {
        Bucket {
            tokens: budget.burst,
            last: now,
        }
    }

    /// Takes one token; false when none is left.
    #[cfg(test)]
    fn take(&mut self, budget: Budget, now: Instant) -> bool {
        self.take_many(budget, now, 1)
    }

    /// Takes `count` tokens, or none (and false) when fewer are left.
    pub(crate) fn take_many(&mut self, budget: Budget, now: Instant, count: usize) -> bool {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * budget.per_second;
        self.tokens = (self.tokens + refill).min(budget.burst);
        self.last = now;
        let count = count as f64;
        if self.tokens >= count {
            self.tokens -= count;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let budget = Budget::new(2.0, 3.0);
        let start = Instant::now();
        let mut bucket = Bucket::full(budget, start);
        assert!((0..3).all(|_| bucket.take(budget, start)));
        assert!(!bucket.take(budget, start), "the burst is spent");
        let later = start + Duration::from_millis(500);
        assert!(
            bucket.take(budget, later),
            "one token refilled in half a second"
        );
        assert!(!bucket.take(budget, later));
        let much_later = later + Duration::from_secs(3_600);
        assert_eq!(
            (0..10).filter(|_| bucket.take(budget, much_later)).count(),
            3,
            "an idle bucket refills to its burst, no more"
        );
    }
}
