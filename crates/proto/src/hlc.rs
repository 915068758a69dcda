//! Hybrid logical clock timestamps: 48 bits of Unix milliseconds, 16 bits of counter.
//!
//! The core never reads a clock: the node passes `now_ms` in. An op's timestamp must exceed
//! those of its causal predecessors, so sorting by (hlc, op id) respects causality.

use serde::{Deserialize, Serialize};

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Hlc(pub u64);

impl Hlc {
    pub const fn from_parts(ms: u64, counter: u16) -> Self {
        Self((ms << 16) | counter as u64)
    }

    pub const fn ms(self) -> u64 {
        self.0 >> 16
    }

    pub const fn counter(self) -> u16 {
        self.0 as u16
    }

    /// The timestamp for a new event: after everything already seen, and at the wall clock
    /// when the clock is ahead of what was seen.
    pub fn next(seen: Hlc, now_ms: u64) -> Hlc {
        let wall = Hlc::from_parts(now_ms.min((1 << 48) - 1), 0);
        if wall > seen {
            wall
        } else {
            Hlc(seen.0.saturating_add(1))
        }
    }

    /// Whether this timestamp is more than `max_skew_ms` ahead of the local clock. Such ops are
    /// held back (quarantined) by the node, never judged invalid: validity must not depend on
    /// any node's clock.
    pub fn is_too_far_ahead(self, now_ms: u64, max_skew_ms: u64) -> bool {
        self.ms() > now_ms.saturating_add(max_skew_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_monotonic_and_follows_the_wall_clock() {
        let a = Hlc::next(Hlc::default(), 1_000);
        assert_eq!(a, Hlc::from_parts(1_000, 0));
        let b = Hlc::next(a, 1_000);
        assert_eq!(b, Hlc::from_parts(1_000, 1));
        let c = Hlc::next(b, 999);
        assert!(c > b);
        assert_eq!(Hlc::next(c, 2_000), Hlc::from_parts(2_000, 0));
    }

    #[test]
    fn skew_check() {
        let t = Hlc::from_parts(10_000, 3);
        assert!(!t.is_too_far_ahead(9_000, 1_000));
        assert!(t.is_too_far_ahead(8_999, 1_000));
    }
}
