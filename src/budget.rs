//! A count of bytes held in memory, with a limit.
//!
//! A fetch holds downloaded wheels in memory, and ingest holds a wheel's
//! entries until the whole wheel checks out; both only while the bytes fit
//! their budget, and write to disk otherwise, so memory stays bounded
//! however many wheels are in flight.

use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes held, at most `limit`.
pub struct MemoryBudget {
    held: AtomicU64,
    limit: u64,
}

impl MemoryBudget {
    pub const fn new(limit: u64) -> Self {
        Self {
            held: AtomicU64::new(0),
            limit,
        }
    }

    /// Counts `size` bytes if they fit; they count until the returned
    /// reservation is dropped.
    pub fn take(&self, size: u64) -> Option<Reserved<'_>> {
        self.held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(size).filter(|&total| total <= self.limit)
            })
            .ok()
            .map(|_| Reserved { size, budget: self })
    }

    /// Bytes that would fit now.
    pub fn available(&self) -> u64 {
        self.limit.saturating_sub(self.held.load(Ordering::Acquire))
    }
}

/// Bytes counted in a [`MemoryBudget`] until dropped.
pub struct Reserved<'b> {
    size: u64,
    budget: &'b MemoryBudget,
}

impl Reserved<'_> {
    pub fn size(&self) -> u64 {
        self.size
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        self.budget.held.fetch_sub(self.size, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_count_until_their_reservation_is_dropped() {
        let budget = MemoryBudget::new(100);
        let first = budget.take(60).expect("fits");
        assert!(budget.take(41).is_none(), "over the limit");
        let second = budget.take(40).expect("fits exactly");
        assert_eq!(budget.available(), 0);
        drop(first);
        assert_eq!(budget.available(), 60);
        assert_eq!(second.size(), 40);
        assert!(budget.take(u64::MAX).is_none(), "no overflow");
    }
}
