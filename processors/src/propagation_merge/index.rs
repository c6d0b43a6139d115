//! A bounded, expiring map from the low 64 bits of a trace id to its upper 64
//! bits: what the processor has learned about full 128-bit ids.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

pub struct TraceIndex {
    map: HashMap<u64, (u64, Instant)>,
    /// Insertion order for expiry and eviction; stale rows (the key was
    /// refreshed since) are skipped when popped.
    order: VecDeque<(u64, Instant)>,
    ttl: Duration,
    max: usize,
}

impl TraceIndex {
    pub fn new(ttl: Duration, max: usize) -> TraceIndex {
        TraceIndex {
            map: HashMap::new(),
            order: VecDeque::new(),
            ttl,
            max: max.max(1),
        }
    }

    /// Remembers `high` for `low`; returns true when the mapping is new.
    pub fn insert(&mut self, low: u64, high: u64, now: Instant) -> bool {
        let new = !matches!(self.map.get(&low), Some((h, _)) if *h == high);
        self.map.insert(low, (high, now));
        self.order.push_back((low, now));
        while self.map.len() > self.max {
            self.pop_oldest();
        }
        // The order queue holds at most a few rows per live key.
        if self.order.len() > self.max.saturating_mul(4) {
            self.order
                .retain(|(k, at)| matches!(self.map.get(k), Some((_, t)) if t == at));
        }
        new
    }

    /// The upper bits and when they were learned.
    pub fn get(&self, low: u64) -> Option<(u64, Instant)> {
        self.map.get(&low).copied()
    }

    pub fn contains(&self, low: u64) -> bool {
        self.map.contains_key(&low)
    }

    fn pop_oldest(&mut self) {
        while let Some((k, at)) = self.order.pop_front() {
            if matches!(self.map.get(&k), Some((_, t)) if *t == at) {
                self.map.remove(&k);
                return;
            }
        }
    }

    /// Forgets mappings older than the ttl.
    pub fn expire(&mut self, now: Instant) {
        while let Some(&(k, at)) = self.order.front() {
            if now.saturating_duration_since(at) < self.ttl {
                break;
            }
            self.order.pop_front();
            if matches!(self.map.get(&k), Some((_, t)) if *t == at) {
                self.map.remove(&k);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_expiring() {
        let t0 = Instant::now();
        let mut idx = TraceIndex::new(Duration::from_secs(10), 2);
        assert!(idx.insert(1, 11, t0));
        assert!(!idx.insert(1, 11, t0));
        assert!(idx.insert(2, 22, t0));
        assert!(idx.insert(3, 33, t0 + Duration::from_secs(1)));
        assert_eq!(idx.len(), 2);
        assert!(!idx.contains(1), "oldest evicted");
        assert_eq!(idx.get(3).map(|(h, _)| h), Some(33));
        idx.expire(t0 + Duration::from_secs(10));
        assert!(!idx.contains(2));
        assert!(idx.contains(3));
        idx.expire(t0 + Duration::from_secs(11));
        assert_eq!(idx.len(), 0);
    }
}
