//! A channel's unacknowledged deliveries, ordered by delivery tag.
//!
//! Tags are handed out in increasing order and clients mostly settle the oldest ones first
//! (`multiple` acks up to a tag), so a deque kept in tag order serves the common operations
//! at its front: appending a delivery is a push, a multiple ack drains a prefix, and a single
//! ack finds its tag by binary search. This replaced a `BTreeMap`, whose node allocations and
//! `split_off` showed in the end-to-end profile.

use std::collections::VecDeque;

/// Unacked entries of type `T` keyed by strictly increasing delivery tags.
#[derive(Debug)]
pub struct TagQueue<T> {
    entries: VecDeque<(u64, T)>,
}

impl<T> Default for TagQueue<T> {
    fn default() -> Self {
        TagQueue {
            entries: VecDeque::new(),
        }
    }
}

impl<T> TagQueue<T> {
    /// Records `value` under `tag`, which must be above every tag recorded so far.
    pub fn insert(&mut self, tag: u64, value: T) {
        debug_assert!(self.entries.back().is_none_or(|(last, _)| *last < tag));
        self.entries.push_back((tag, value));
    }

    fn position(&self, tag: u64) -> Result<usize, usize> {
        self.entries.binary_search_by_key(&tag, |(t, _)| *t)
    }

    pub fn contains(&self, tag: u64) -> bool {
        self.position(tag).is_ok()
    }

    /// Removes and returns the entry under `tag`.
    pub fn remove(&mut self, tag: u64) -> Option<T> {
        let at = self.position(tag).ok()?;
        self.entries.remove(at).map(|(_, v)| v)
    }

    /// Removes and returns every entry with a tag up to and including `tag`, oldest first.
    pub fn take_through(&mut self, tag: u64) -> Vec<T> {
        let n = match self.position(tag) {
            Ok(at) => at + 1,
            Err(at) => at,
        };
        self.entries.drain(..n).map(|(_, v)| v).collect()
    }

    /// Removes and returns every entry, oldest first.
    pub fn take_all(&mut self) -> Vec<T> {
        self.entries.drain(..).map(|(_, v)| v).collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_multiple_settles() {
        let mut u = TagQueue::default();
        for tag in 1..=10u64 {
            u.insert(tag, tag * 10);
        }
        assert_eq!(u.remove(4), Some(40));
        assert_eq!(u.remove(4), None);
        assert!(!u.contains(4));
        assert!(u.contains(5));
        assert_eq!(u.take_through(6), vec![10, 20, 30, 50, 60]);
        assert_eq!(u.len(), 4);
        assert_eq!(u.remove(9), Some(90));
        assert_eq!(u.take_all(), vec![70, 80, 100]);
        assert!(u.is_empty());
    }

    #[test]
    fn take_through_a_missing_tag_stops_below_it() {
        let mut u = TagQueue::default();
        for tag in [2u64, 4, 6] {
            u.insert(tag, tag);
        }
        assert_eq!(u.take_through(5), vec![2, 4]);
        assert_eq!(u.take_through(1), Vec::<u64>::new());
        assert_eq!(u.take_all(), vec![6]);
    }
}
