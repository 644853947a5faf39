//! Where each endpoint's next claim may start scanning the queue.
//!
//! A busy endpoint has up to `HOOKRELAY_ENDPOINT_CONCURRENCY` attempts in flight, and
//! their queue entries stay at the front of its queue range until each attempt is
//! recorded. A claim made as one of them ends would step over all the others again
//! (each step a node lookup in sled) to reach the one entry it can take. Instead, a
//! claim remembers where its scan found the first entry it could not pass over; the
//! next claim starts there, as long as every entry before that point is still leased.
//!
//! What keeps that true: entries before the start are all leased when it is set, and
//! they leave the queue when their attempt is recorded. A lease may instead run out
//! (an attempt that never ended): the start holds only until the earliest lease among
//! those entries ends, then the next claim scans from the front again. And an entry
//! queued before the start (an event received earlier but stored later than one
//! claimed, a retry, a replay) moves the start back to it: every insert into the queue
//! is reported through [`ScanStarts::queued`], after it and before anyone is told of it.

use std::collections::HashMap;

use crate::domain::{EndpointId, UnixMillis};

/// Scan starts by endpoint (the first `EndpointId::LEN` bytes of a queue key). Its lock
/// is held only for a moment, never over a sled call, so ingest never waits on a claim.
#[derive(Default)]
pub(super) struct ScanStarts {
    by_endpoint: HashMap<Vec<u8>, Start>,
}

struct Start {
    /// The first queue key that may be claimable; `None`: the endpoint's first entry.
    key: Option<Vec<u8>>,
    /// Every entry before `key` is leased until this time at least.
    until: UnixMillis,
    /// While a claim scans: the least key queued since it began (`Some(None)`: none).
    queued_meanwhile: Option<Option<Vec<u8>>>,
}

impl ScanStarts {
    /// Begins a claim's scan at `now`: where it may start, and whether its end may move
    /// the start (not while another claim of the endpoint scans).
    pub(super) fn begin(&mut self, endpoint: &[u8], now: UnixMillis) -> Scan {
        let start = match self.by_endpoint.get_mut(endpoint) {
            Some(start) => start,
            None => self.by_endpoint.entry(endpoint.to_vec()).or_insert(Start {
                key: None,
                until: UnixMillis::MAX,
                queued_meanwhile: None,
            }),
        };
        let records = start.queued_meanwhile.is_none();
        if records {
            start.queued_meanwhile = Some(None);
        }
        let valid = start.until > now;
        Scan {
            start: start.key.clone().filter(|_| valid),
            until: if valid { start.until } else { UnixMillis::MAX },
            records,
            open: None,
            last: None,
        }
    }

    /// Ends a claim's scan: the next one starts where this one found the first entry it
    /// could not pass over, or before any entry queued meanwhile. A scan cut short by an
    /// error (`completed` false) moves nothing.
    pub(super) fn end(&mut self, endpoint: &[u8], scan: Scan, completed: bool) {
        if !scan.records {
            return;
        }
        let Some(start) = self.by_endpoint.get_mut(endpoint) else {
            return; // forgotten meanwhile: the endpoint is gone
        };
        let queued_meanwhile = start.queued_meanwhile.take().flatten();
        if !completed {
            return;
        }
        let until = scan.until;
        start.key = match (scan.finish(), queued_meanwhile) {
            (Some(found), Some(queued)) => Some(found.min(queued)),
            (found, _) => found,
        };
        start.until = until;
    }

    /// An entry was put into the queue at `key`: no claim may start after it.
    pub(super) fn queued(&mut self, key: &[u8]) {
        let Some(start) = key.get(..EndpointId::LEN).and_then(|e| self.by_endpoint.get_mut(e)) else {
            return;
        };
        if start.key.as_deref().is_some_and(|first| key < first) {
            start.key = Some(key.to_vec());
        }
        if let Some(least) = &mut start.queued_meanwhile {
            if least.as_deref().is_none_or(|least| key < least) {
                *least = Some(key.to_vec());
            }
        }
    }

    /// Forgets a retired endpoint.
    pub(super) fn forget(&mut self, endpoint: &[u8]) {
        self.by_endpoint.remove(endpoint);
    }
}

/// What one claim's forward scan saw, in key order, for the next claim's start.
pub(super) struct Scan {
    start: Option<Vec<u8>>,
    until: UnixMillis,
    /// Whether this scan's end moves the start.
    records: bool,
    /// The first entry the scan could not pass over (not leased, or not taken).
    open: Option<Vec<u8>>,
    /// The last entry passed over before `open`.
    last: Option<sled::IVec>,
}

impl Scan {
    /// Where the scan starts; `None`: at the endpoint's first entry.
    pub(super) fn start(&self) -> Option<&[u8]> {
        self.start.as_deref()
    }

    /// The scan passed over an entry that stays leased until `until` (one leased
    /// before, or one this claim takes), or that can never be claimed (`None`).
    pub(super) fn passed(&mut self, key: &sled::IVec, until: Option<UnixMillis>) {
        if self.open.is_none() {
            if let Some(until) = until {
                self.until = self.until.min(until);
            }
            self.last = Some(key.clone());
        }
    }

    /// The scan met an entry that a later claim may take.
    pub(super) fn open_at(&mut self, key: &[u8]) {
        if self.open.is_none() {
            self.open = Some(key.to_vec());
        }
    }

    /// Where the next claim may start; `None`: at the front.
    fn finish(self) -> Option<Vec<u8>> {
        self.open
            .or_else(|| {
                // Just after the last entry passed: the least key greater than it.
                self.last.map(|last| {
                    let mut key = last.to_vec();
                    key.push(0);
                    key
                })
            })
            .or(self.start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(endpoint: u8, n: u8) -> Vec<u8> {
        let mut key = vec![endpoint; EndpointId::LEN];
        key.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, n]);
        key
    }

    fn endpoint(n: u8) -> Vec<u8> {
        vec![n; EndpointId::LEN]
    }

    /// Where a claim at `now` would start, and until when that holds.
    fn start_of(starts: &mut ScanStarts, endpoint: &[u8], now: UnixMillis) -> (Option<Vec<u8>>, UnixMillis) {
        let scan = starts.begin(endpoint, now);
        let found = (scan.start.clone(), scan.until);
        starts.end(endpoint, scan, false);
        found
    }

    #[test]
    fn the_next_claim_starts_at_the_first_entry_not_passed_over() {
        let mut starts = ScanStarts::default();
        let mut scan = starts.begin(&endpoint(1), 0);
        assert_eq!(scan.start(), None);
        scan.passed(&key(1, 1).into(), Some(500));
        scan.passed(&key(1, 2).into(), Some(400));
        scan.open_at(&key(1, 3));
        // Entries after the open one do not count: the next scan passes them again.
        scan.passed(&key(1, 4).into(), Some(100));
        starts.end(&endpoint(1), scan, true);
        assert_eq!(start_of(&mut starts, &endpoint(1), 399), (Some(key(1, 3)), 400));
        assert_eq!(
            start_of(&mut starts, &endpoint(1), 400),
            (None, UnixMillis::MAX),
            "the earliest lease ran out"
        );
        assert_eq!(start_of(&mut starts, &endpoint(2), 0), (None, UnixMillis::MAX));
    }

    #[test]
    fn a_scan_that_passed_everything_starts_the_next_just_after_it() {
        let mut starts = ScanStarts::default();
        let mut scan = starts.begin(&endpoint(1), 0);
        scan.passed(&key(1, 1).into(), Some(500));
        scan.passed(&key(1, 2).into(), None);
        starts.end(&endpoint(1), scan, true);
        let (start, until) = start_of(&mut starts, &endpoint(1), 0);
        let start = start.unwrap();
        assert!(start.as_slice() > key(1, 2).as_slice() && start.as_slice() < key(1, 3).as_slice());
        assert_eq!(until, 500);
    }

    #[test]
    fn a_scan_that_saw_nothing_or_failed_keeps_the_start() {
        let mut starts = ScanStarts::default();
        let mut scan = starts.begin(&endpoint(1), 0);
        scan.open_at(&key(1, 5));
        starts.end(&endpoint(1), scan, true);
        let scan = starts.begin(&endpoint(1), 0);
        starts.end(&endpoint(1), scan, true);
        assert_eq!(
            start_of(&mut starts, &endpoint(1), 0),
            (Some(key(1, 5)), UnixMillis::MAX)
        );
        let mut scan = starts.begin(&endpoint(1), 0);
        scan.passed(&key(1, 6).into(), Some(10));
        starts.end(&endpoint(1), scan, false);
        assert_eq!(
            start_of(&mut starts, &endpoint(1), 0),
            (Some(key(1, 5)), UnixMillis::MAX)
        );
    }

    #[test]
    fn an_entry_queued_before_the_start_moves_it_back() {
        let mut starts = ScanStarts::default();
        let mut scan = starts.begin(&endpoint(1), 0);
        scan.open_at(&key(1, 5));
        starts.end(&endpoint(1), scan, true);
        starts.queued(&key(1, 7));
        starts.queued(&key(2, 1));
        assert_eq!(start_of(&mut starts, &endpoint(1), 0).0, Some(key(1, 5)));
        starts.queued(&key(1, 3));
        assert_eq!(start_of(&mut starts, &endpoint(1), 0).0, Some(key(1, 3)));
        starts.forget(&endpoint(1));
        assert_eq!(start_of(&mut starts, &endpoint(1), 0).0, None);
    }

    #[test]
    fn an_entry_queued_during_a_scan_is_not_skipped_by_the_next() {
        let mut starts = ScanStarts::default();
        let mut scan = starts.begin(&endpoint(1), 0);
        // Queued while the scan ran, at a place the scan had already passed.
        starts.queued(&key(1, 2));
        starts.queued(&key(1, 4));
        scan.passed(&key(1, 1).into(), Some(50));
        scan.passed(&key(1, 3).into(), Some(50));
        scan.open_at(&key(1, 6));
        // A second claim of the same endpoint meanwhile does not move the start.
        let mut other = starts.begin(&endpoint(1), 0);
        other.open_at(&key(1, 9));
        starts.end(&endpoint(1), other, true);
        starts.end(&endpoint(1), scan, true);
        assert_eq!(start_of(&mut starts, &endpoint(1), 0), (Some(key(1, 2)), 50));
    }
}
