//! A set of small integers (guild-state op indices), kept as sorted, disjoint, non-adjacent
//! half-open ranges: the causal past of each guild-state op, and the working sets of the
//! resolution.
//!
//! Guild-state history is mostly linear, so a causal past is one range or a few. A dense bit
//! per op made every replica hold n²/16 bytes for n guild-state ops (625 MB at 100,000 joins);
//! ranges hold a few words per op for such a history. A member whose guild-state ops cite only
//! their own, interleaved with everyone else's, makes their k-th op's past k ranges (8 bytes
//! a gap, where dense cost a bit an op): bounded for canonical ops by the guild-state rate,
//! not for forked ones.

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct BitSet {
    ranges: Vec<(u32, u32)>,
}

fn index(i: usize) -> u32 {
    u32::try_from(i).expect("fewer than 2^32 guild-state ops")
}

impl BitSet {
    pub fn contains(&self, i: usize) -> bool {
        let i = index(i);
        // The last range starting at or before i.
        let after = self.ranges.partition_point(|&(start, _)| start <= i);
        after > 0 && i < self.ranges[after - 1].1
    }

    pub fn insert(&mut self, i: usize) {
        let i = index(i);
        // The first range ending at or after i: the one holding i or touching it from below.
        let at = self.ranges.partition_point(|&(_, end)| end < i);
        match self.ranges.get(at).copied() {
            Some((start, end)) if start <= i && i < end => {}
            Some((start, end)) if start <= i && end == i => {
                self.ranges[at].1 = i + 1;
                if self.ranges.get(at + 1).is_some_and(|next| next.0 == i + 1) {
                    self.ranges[at].1 = self.ranges[at + 1].1;
                    self.ranges.remove(at + 1);
                }
            }
            Some((start, _)) if start == i + 1 => self.ranges[at].0 = i,
            _ => self.ranges.insert(at, (i, i + 1)),
        }
    }

    pub fn remove(&mut self, i: usize) {
        let i = index(i);
        let after = self.ranges.partition_point(|&(start, _)| start <= i);
        let Some(at) = after.checked_sub(1).filter(|&at| i < self.ranges[at].1) else {
            return;
        };
        let (start, end) = self.ranges[at];
        match (start == i, end == i + 1) {
            (true, true) => {
                self.ranges.remove(at);
            }
            (true, false) => self.ranges[at].0 = i + 1,
            (false, true) => self.ranges[at].1 = i,
            (false, false) => {
                self.ranges[at].1 = i;
                self.ranges.insert(at + 1, (i + 1, end));
            }
        }
    }

    /// Whether the two sets share an element.
    pub fn intersects(&self, other: &BitSet) -> bool {
        let (mut a, mut b) = (0, 0);
        while a < self.ranges.len() && b < other.ranges.len() {
            let (x, y) = (self.ranges[a], other.ranges[b]);
            if x.0.max(y.0) < x.1.min(y.1) {
                return true;
            }
            if x.1 < y.1 {
                a += 1;
            } else {
                b += 1;
            }
        }
        false
    }

    pub fn union_with(&mut self, other: &BitSet) {
        if other.ranges.is_empty() {
            return;
        }
        let mut merged: Vec<(u32, u32)> =
            Vec::with_capacity(self.ranges.len() + other.ranges.len());
        let mut mine = self.ranges.iter().copied().peekable();
        let mut theirs = other.ranges.iter().copied().peekable();
        loop {
            let next = match (mine.peek(), theirs.peek()) {
                (Some(a), Some(b)) if a.0 <= b.0 => mine.next(),
                (Some(_), Some(_)) => theirs.next(),
                (Some(_), None) => mine.next(),
                (None, Some(_)) => theirs.next(),
                (None, None) => break,
            };
            let (start, end) = next.expect("peeked");
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        self.ranges = merged;
    }

    pub fn intersect_with(&mut self, other: &BitSet) {
        let mut kept = Vec::new();
        let (mut a, mut b) = (0, 0);
        while a < self.ranges.len() && b < other.ranges.len() {
            let (x, y) = (self.ranges[a], other.ranges[b]);
            let (start, end) = (x.0.max(y.0), x.1.min(y.1));
            if start < end {
                kept.push((start, end));
            }
            if x.1 < y.1 {
                a += 1;
            } else {
                b += 1;
            }
        }
        self.ranges = kept;
    }

    pub fn len(&self) -> usize {
        self.ranges.iter().map(|(s, e)| (e - s) as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Set equality (the ranges of a set are unique, so this compares them).
    pub fn same_as(&self, other: &BitSet) -> bool {
        self.ranges == other.ranges
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::BitSet;

    fn of(items: &[usize]) -> (BitSet, BTreeSet<usize>) {
        let mut set = BitSet::default();
        for &i in items {
            set.insert(i);
        }
        (set, items.iter().copied().collect())
    }

    fn agrees(set: &BitSet, reference: &BTreeSet<usize>) -> Result<(), TestCaseError> {
        for i in 0..80 {
            prop_assert_eq!(set.contains(i), reference.contains(&i), "{}", i);
        }
        prop_assert_eq!(set.len(), reference.len());
        prop_assert_eq!(set.is_empty(), reference.is_empty());
        // Normalized: sorted, disjoint, never touching, never empty.
        for pair in set.ranges.windows(2) {
            prop_assert!(pair[0].1 < pair[1].0, "{:?}", set.ranges);
        }
        prop_assert!(set.ranges.iter().all(|(s, e)| s < e));
        Ok(())
    }

    proptest! {
        #[test]
        fn behaves_like_a_set_of_integers(
            a in prop::collection::vec(0usize..70, 0..60),
            b in prop::collection::vec(0usize..70, 0..60),
            removed in prop::collection::vec(0usize..70, 0..20),
        ) {
            let (mut x, mut rx) = of(&a);
            let (y, ry) = of(&b);
            agrees(&x, &rx)?;
            prop_assert_eq!(x.intersects(&y), !rx.is_disjoint(&ry));
            let mut fewer = x.clone();
            let mut rfewer = rx.clone();
            for &i in &removed {
                fewer.remove(i);
                rfewer.remove(&i);
                agrees(&fewer, &rfewer)?;
            }
            let mut both = x.clone();
            both.intersect_with(&y);
            let rboth: BTreeSet<usize> = rx.intersection(&ry).copied().collect();
            agrees(&both, &rboth)?;
            x.union_with(&y);
            rx.extend(&ry);
            agrees(&x, &rx)?;
            let (same, _) = of(&rx.iter().rev().copied().collect::<Vec<_>>());
            prop_assert!(same.same_as(&x));
        }
    }
}
