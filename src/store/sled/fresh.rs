//! First attempts, queued in memory instead of in the `queue` tree.
//!
//! An accepted event writes one key to the `fresh` tree (its id) instead of one queue
//! entry per endpoint. Once the event is durable, each of its endpoints' first
//! attempts waits here, in that endpoint's [`Lane`]. The `fresh` key goes when every
//! one of those deliveries has a record of its own, or was dropped (endpoint deleted,
//! event replayed). A first attempt that needs a retry enters the `queue` tree beside
//! its record, as every later attempt does.
//!
//! When the store opens, each `fresh` key's endpoints that have no delivery record of
//! their own are queued here again (see `SledStore::open`): an event acknowledged
//! before a crash is delivered after it.
//!
//! This saves a queue entry's insert and its removal per delivery, and the claims'
//! scans of the queue tree for first attempts.
//!
//! A lane holds at most [`LANE_LIMIT`] waiting attempts, and all lanes together at most
//! [`WAITING_LIMIT`]: an event that finds one of its endpoints' lanes full, or all of
//! them, is queued as before, a queue entry per endpoint, so what waits for slow or
//! unreachable endpoints waits on disk, not in memory, however many endpoints there are.
//!
//! Events are held by their 16-byte UUID ([`EventId::uuid`]), not by a copy of the
//! id's string: a waiting attempt takes 24 bytes, with no allocation of its own.

use std::collections::{HashMap, HashSet, VecDeque};

use uuid::Uuid;

use crate::domain::{EndpointId, EventId, MerchantId, UnixMillis};

/// Most first attempts waiting in one endpoint's lane before new events go to the
/// queue tree instead (about 30 bytes each, with the event's share of `left`).
pub const LANE_LIMIT: usize = 4_096;

/// Most first attempts waiting in all lanes together (12 MiB, and the count of their
/// events): without it, memory would grow with the number of endpoints, by 4,096 per
/// slow one. Delivery at full speed keeps far fewer waiting; so does a backlog for
/// 100 endpoints (the benchmark's), which a lower bound measured slower to queue
/// (docs/benchmarks.md).
pub const WAITING_LIMIT: usize = 524_288;

/// Room a lane or the count of events keeps when it empties after a burst.
const SMALL: usize = 64;

/// The first attempts of every endpoint, and how many each event still has.
#[derive(Default)]
pub(super) struct Fresh {
    lanes: HashMap<EndpointId, Lane>,
    /// Per event, its first attempts not yet recorded (waiting or claimed).
    left: HashMap<Uuid, usize>,
    /// Endpoints deleted since the store opened: an event stored while one was being
    /// deleted must not queue for it afterwards.
    retired: HashSet<EndpointId>,
    /// First attempts waiting in all lanes (not those claimed).
    waiting: usize,
}

/// One endpoint's first attempts.
struct Lane {
    merchant: MerchantId,
    /// Oldest first: event and when it was received (its due time).
    waiting: VecDeque<(Uuid, UnixMillis)>,
    /// Claimed ones: event → (received at, lease until).
    claimed: HashMap<Uuid, (UnixMillis, UnixMillis)>,
}

/// A first attempt handed to a worker.
pub(super) struct FreshClaim {
    pub event: EventId,
    pub merchant: MerchantId,
    pub received_at: UnixMillis,
}

impl Fresh {
    /// Queues an event's first attempts, one per endpoint; returns how many were
    /// queued (endpoints deleted meanwhile get none).
    pub fn add(
        &mut self,
        event: &EventId,
        merchant: &MerchantId,
        received_at: UnixMillis,
        endpoints: &[EndpointId],
    ) -> usize {
        let key = event.uuid();
        let mut queued = 0;
        for endpoint in endpoints.iter().filter(|e| !self.retired.contains(*e)) {
            let lane = self.lanes.entry(endpoint.clone()).or_insert_with(|| Lane {
                merchant: merchant.clone(),
                waiting: VecDeque::new(),
                claimed: HashMap::new(),
            });
            lane.waiting.push_back((key, received_at));
            queued += 1;
        }
        if queued > 0 {
            *self.left.entry(key).or_default() += queued;
            self.waiting += queued;
        }
        queued
    }

    /// Whether a lane of one of these endpoints is full, or all lanes together would be
    /// with an attempt for each: an event for them is queued in the queue tree instead.
    pub fn full(&self, endpoints: &[EndpointId]) -> bool {
        self.waiting + endpoints.len() > WAITING_LIMIT
            || endpoints.iter().any(|endpoint| {
                self.lanes
                    .get(endpoint)
                    .is_some_and(|lane| lane.waiting.len() >= LANE_LIMIT)
            })
    }

    /// Claims up to `limit` of an endpoint's first attempts: those whose lease ran out
    /// first (their attempt outlived it), then the oldest waiting, in the order their
    /// events were stored, while due: received by `now`, or after `horizon` (received
    /// while the clock was that far ahead).
    pub fn claim(
        &mut self,
        endpoint: &EndpointId,
        now: UnixMillis,
        lease_until: UnixMillis,
        horizon: UnixMillis,
        limit: usize,
    ) -> Vec<FreshClaim> {
        let Some(lane) = self.lanes.get_mut(endpoint) else {
            return Vec::new();
        };
        let mut claims = Vec::new();
        for (event, (received_at, until)) in &mut lane.claimed {
            if claims.len() >= limit {
                break;
            }
            if *until <= now {
                *until = lease_until;
                claims.push(FreshClaim {
                    event: EventId::from_uuid(*event),
                    merchant: lane.merchant.clone(),
                    received_at: *received_at,
                });
            }
        }
        while claims.len() < limit {
            match lane.waiting.front() {
                Some(&(_, received_at)) if is_due(received_at, now, horizon) => {}
                _ => break,
            }
            let (event, received_at) = lane.waiting.pop_front().expect("just looked at it");
            self.waiting -= 1;
            if lane.waiting.is_empty() {
                // What a burst grew is handed back once it is through.
                lane.waiting.shrink_to(SMALL);
            }
            lane.claimed.insert(event, (received_at, lease_until));
            claims.push(FreshClaim {
                event: EventId::from_uuid(event),
                merchant: lane.merchant.clone(),
                received_at,
            });
        }
        claims
    }

    /// The due times, sorted, of the first attempts a claim of up to `limit` would take
    /// now (see [`Fresh::claim`]): what a claim weighs against the queue's entries, so
    /// that the oldest due go first whichever kind they are.
    pub fn peek_due(
        &self,
        endpoint: &EndpointId,
        now: UnixMillis,
        horizon: UnixMillis,
        limit: usize,
    ) -> Vec<UnixMillis> {
        let Some(lane) = self.lanes.get(endpoint) else {
            return Vec::new();
        };
        let expired = lane
            .claimed
            .values()
            .filter(|(_, until)| *until <= now)
            .map(|(due, _)| *due);
        let waiting = lane
            .waiting
            .iter()
            .map(|(_, due)| *due)
            .take_while(|due| is_due(*due, now, horizon));
        let mut due: Vec<UnixMillis> = expired.chain(waiting).take(limit).collect();
        due.sort_unstable();
        due
    }

    /// When the oldest first attempt still waiting for the endpoint was due.
    pub fn next_due(&self, endpoint: &EndpointId) -> Option<UnixMillis> {
        self.lanes.get(endpoint)?.waiting.front().map(|(_, due)| *due)
    }

    /// An attempt ended. `Some(last)` if it was a claimed first attempt, now done,
    /// with `last` telling whether its event has none left; `None` if it was not one
    /// (or another attempt of it ended first).
    pub fn finish(&mut self, endpoint: &EndpointId, event: &EventId) -> Option<bool> {
        let key = event.uuid();
        self.lanes.get_mut(endpoint)?.claimed.remove(&key)?;
        Some(self.done(key))
    }

    /// Drops a first attempt, waiting or claimed (its event was replayed or deleted):
    /// `Some(last)` as for [`Fresh::finish`] if there was one. An attempt of it under
    /// way changes nothing when it ends.
    pub fn drop_delivery(&mut self, endpoint: &EndpointId, event: &EventId) -> Option<bool> {
        let key = event.uuid();
        let lane = self.lanes.get_mut(endpoint)?;
        if lane.claimed.remove(&key).is_none() {
            let at = lane.waiting.iter().position(|(e, _)| *e == key)?;
            lane.waiting.remove(at);
            self.waiting -= 1;
        }
        Some(self.done(key))
    }

    /// Drops every first attempt of a deleted endpoint and refuses new ones. Returns
    /// the events of those dropped, and those of them left with no first attempt.
    pub fn retire(&mut self, endpoint: &EndpointId) -> (Vec<EventId>, Vec<EventId>) {
        self.retired.insert(endpoint.clone());
        let Some(lane) = self.lanes.remove(endpoint) else {
            return (Vec::new(), Vec::new());
        };
        self.waiting -= lane.waiting.len();
        let dropped: Vec<Uuid> = lane
            .waiting
            .into_iter()
            .map(|(event, _)| event)
            .chain(lane.claimed.into_keys())
            .collect();
        let emptied = dropped
            .iter()
            .filter(|event| self.done(**event))
            .map(|event| EventId::from_uuid(*event))
            .collect();
        (dropped.into_iter().map(EventId::from_uuid).collect(), emptied)
    }

    /// One of the event's first attempts is done; returns whether it was the last.
    fn done(&mut self, event: Uuid) -> bool {
        match self.left.get_mut(&event) {
            Some(left) if *left > 1 => {
                *left -= 1;
                false
            }
            _ => {
                self.left.remove(&event);
                if self.left.capacity() > SMALL && self.left.len() < self.left.capacity() / 8 {
                    self.left.shrink_to(self.left.len() * 2);
                }
                true
            }
        }
    }
}

/// Whether a first attempt received at `received_at` may be made at `now`: received by
/// then, or after `horizon` (received while the clock was that far ahead).
fn is_due(received_at: UnixMillis, now: UnixMillis, horizon: UnixMillis) -> bool {
    received_at <= now || received_at > horizon
}

#[cfg(test)]
mod tests {
    use super::*;

    const HORIZON: UnixMillis = 1_000_000;

    fn ids() -> (MerchantId, Vec<EndpointId>, Vec<EventId>) {
        let merchant = MerchantId::parse("m1").unwrap();
        let endpoints = (0..2).map(|_| EndpointId::generate()).collect();
        let events = (0..3).map(|_| EventId::generate()).collect();
        (merchant, endpoints, events)
    }

    #[test]
    fn an_event_is_done_when_each_endpoint_finished() {
        let (merchant, ep, ev) = ids();
        let mut fresh = Fresh::default();
        assert_eq!(fresh.add(&ev[0], &merchant, 10, &ep), 2);
        assert_eq!(fresh.next_due(&ep[0]), Some(10));
        let claimed = fresh.claim(&ep[0], 20, 100, HORIZON, 16);
        assert_eq!(claimed.len(), 1);
        assert_eq!((claimed[0].received_at, &claimed[0].event), (10, &ev[0]));
        assert_eq!(fresh.next_due(&ep[0]), None);
        assert_eq!(fresh.finish(&ep[0], &ev[0]), Some(false));
        // A second attempt of the same delivery finds nothing to finish.
        assert_eq!(fresh.finish(&ep[0], &ev[0]), None);
        fresh.claim(&ep[1], 20, 100, HORIZON, 16);
        assert_eq!(fresh.finish(&ep[1], &ev[0]), Some(true));
    }

    #[test]
    fn claims_respect_the_limit_and_take_back_expired_leases_first() {
        let (merchant, ep, ev) = ids();
        let a = &ep[0];
        let mut fresh = Fresh::default();
        for (n, event) in (1..).zip(&ev) {
            fresh.add(event, &merchant, n, std::slice::from_ref(a));
        }
        let first = fresh.claim(a, 3, 50, HORIZON, 2);
        assert_eq!(first.iter().map(|c| c.received_at).collect::<Vec<_>>(), vec![1, 2]);
        // Leases still held: only the third is left.
        assert_eq!(fresh.claim(a, 10, 60, HORIZON, 5).len(), 1);
        // Once the first two leases ran out they are claimed again, and nothing else.
        let mut again: Vec<_> = fresh
            .claim(a, 55, 200, HORIZON, 5)
            .iter()
            .map(|c| c.received_at)
            .collect();
        again.sort_unstable();
        assert_eq!(again, vec![1, 2]);
    }

    #[test]
    fn a_lane_is_full_at_its_limit_until_claims_take_from_it() {
        let (merchant, ep, _) = ids();
        let mut fresh = Fresh::default();
        let events: Vec<EventId> = (0..LANE_LIMIT).map(|_| EventId::generate()).collect();
        for event in &events[..LANE_LIMIT - 1] {
            fresh.add(event, &merchant, 1, &ep[..1]);
        }
        assert!(!fresh.full(&ep));
        fresh.add(&events[LANE_LIMIT - 1], &merchant, 1, &ep[..1]);
        assert!(fresh.full(&ep), "one endpoint's full lane is enough");
        assert!(!fresh.full(&ep[1..]));
        fresh.claim(&ep[0], 5, 50, HORIZON, 1);
        assert!(!fresh.full(&ep));
    }

    #[test]
    fn all_lanes_together_are_full_at_the_waiting_limit_with_no_lane_full() {
        let merchant = MerchantId::parse("m1").unwrap();
        let per_lane = LANE_LIMIT / 2;
        let endpoints: Vec<EndpointId> = (0..WAITING_LIMIT / per_lane).map(|_| EndpointId::generate()).collect();
        let events: Vec<EventId> = (0..per_lane).map(|_| EventId::generate()).collect();
        let mut fresh = Fresh::default();
        for (n, event) in (1..).zip(&events) {
            assert_eq!(fresh.add(event, &merchant, n, &endpoints), endpoints.len());
        }
        let other = EndpointId::generate();
        assert!(
            fresh.full(std::slice::from_ref(&other)),
            "every lane half full, all of them full"
        );
        assert!(fresh.full(&endpoints[..1]));

        // Whatever takes attempts out of the lanes makes room again: a claim,
        fresh.claim(&endpoints[0], 10_000, 20_000, HORIZON, 1);
        assert!(!fresh.full(std::slice::from_ref(&other)));
        assert!(
            fresh.full(&[other.clone(), endpoints[0].clone()]),
            "room for one, not two"
        );
        // a delivery dropped,
        assert_eq!(fresh.drop_delivery(&endpoints[1], &events[5]), Some(false));
        assert!(!fresh.full(&[other.clone(), endpoints[0].clone()]));
        // an endpoint deleted.
        fresh.retire(&endpoints[2]);
        assert_eq!(fresh.waiting, WAITING_LIMIT - 2 - per_lane);
        assert!(!fresh.full(&endpoints[3..]));
    }

    #[test]
    fn a_burst_hands_its_room_back_once_it_is_through() {
        let (merchant, ep, _) = ids();
        let a = &ep[0];
        let mut fresh = Fresh::default();
        let events: Vec<EventId> = (0..LANE_LIMIT).map(|_| EventId::generate()).collect();
        for event in &events {
            fresh.add(event, &merchant, 1, std::slice::from_ref(a));
        }
        assert!(fresh.lanes[a].waiting.capacity() >= LANE_LIMIT);
        assert!(fresh.left.capacity() >= LANE_LIMIT);
        let claimed = fresh.claim(a, 5, 50, HORIZON, LANE_LIMIT);
        assert_eq!(claimed.len(), LANE_LIMIT);
        assert!(fresh.lanes[a].waiting.capacity() <= SMALL);
        for (claim, event) in claimed.iter().zip(&events) {
            assert_eq!(&claim.event, event, "claimed in the order stored, under the same id");
            assert_eq!(fresh.finish(a, &claim.event), Some(true));
        }
        assert!(fresh.left.is_empty());
        assert!(fresh.left.capacity() <= 2 * SMALL, "{}", fresh.left.capacity());
    }

    #[test]
    fn only_due_attempts_are_claimed() {
        let (merchant, ep, ev) = ids();
        let a = &ep[0];
        let mut fresh = Fresh::default();
        // Stored while the clock was far ahead, then at its right time.
        fresh.add(&ev[0], &merchant, HORIZON + 1, std::slice::from_ref(a));
        fresh.add(&ev[1], &merchant, 500, std::slice::from_ref(a));
        let claimed = fresh.claim(a, 100, 10_000, HORIZON, 16);
        assert_eq!(claimed.iter().map(|c| &c.event).collect::<Vec<_>>(), [&ev[0]]);
        assert_eq!(fresh.next_due(a), Some(500));
        assert_eq!(fresh.claim(a, 500, 600, HORIZON, 16).len(), 1);
    }

    #[test]
    fn a_retired_endpoint_drops_its_attempts_and_takes_no_new_ones() {
        let (merchant, ep, ev) = ids();
        let mut fresh = Fresh::default();
        fresh.add(&ev[0], &merchant, 1, &ep);
        fresh.add(&ev[1], &merchant, 2, &ep[..1]);
        fresh.claim(&ep[0], 5, 50, HORIZON, 1);
        let (mut dropped, emptied) = fresh.retire(&ep[0]);
        dropped.sort();
        let mut both = vec![ev[0].clone(), ev[1].clone()];
        both.sort();
        assert_eq!(dropped, both);
        assert_eq!(emptied, vec![ev[1].clone()]);
        assert_eq!(fresh.add(&ev[2], &merchant, 3, &ep), 1);
        assert_eq!(fresh.claim(&ep[0], 5, 50, HORIZON, 16).len(), 0);
        assert_eq!(fresh.claim(&ep[1], 5, 50, HORIZON, 16).len(), 2);
    }

    #[test]
    fn a_dropped_delivery_is_found_waiting_or_claimed() {
        let (merchant, ep, ev) = ids();
        let a = &ep[0];
        let mut fresh = Fresh::default();
        fresh.add(&ev[0], &merchant, 1, std::slice::from_ref(a));
        fresh.add(&ev[1], &merchant, 2, std::slice::from_ref(a));
        fresh.claim(a, 5, 50, HORIZON, 1);
        assert_eq!(fresh.drop_delivery(a, &ev[1]), Some(true));
        assert_eq!(fresh.drop_delivery(a, &ev[0]), Some(true));
        assert_eq!(fresh.drop_delivery(a, &ev[0]), None);
        assert_eq!(fresh.finish(a, &ev[0]), None);
    }
}
