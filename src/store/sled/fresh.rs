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
//! Each event with first attempts left is held once, in a slot of its own: its 16-byte
//! UUID ([`EventId::uuid`]), when it was received, and how many of its first attempts
//! are left. A lane holds its waiting attempts as the 4-byte numbers of their events'
//! slots, so an event's five waiting attempts take 32 + 5 × 4 bytes, not 5 × 24 and an
//! entry in a map of counts (docs/benchmarks.md).

use std::collections::{HashMap, HashSet, VecDeque};

use uuid::Uuid;

use crate::domain::{EndpointId, EventId, MerchantId, UnixMillis};

/// Most first attempts waiting in one endpoint's lane before new events go to the
/// queue tree instead (4 bytes each, with a share of their event's slot).
pub const LANE_LIMIT: usize = 4_096;

/// Most first attempts waiting in all lanes together (2 MiB, and their events' slots):
/// without it, memory would grow with the number of endpoints, by 4,096 per
/// slow one. Delivery at full speed keeps far fewer waiting; so does a backlog for
/// 100 endpoints (the benchmark's), which a lower bound measured slower to queue
/// (docs/benchmarks.md).
pub const WAITING_LIMIT: usize = 524_288;

/// Room a lane or the table of events keeps when it empties after a burst.
const SMALL: usize = 64;

/// The first attempts of every endpoint, and the events they are for.
#[derive(Default)]
pub(super) struct Fresh {
    lanes: HashMap<EndpointId, Lane>,
    /// Events with first attempts not yet recorded (waiting or claimed), by slot; a
    /// slot whose event has none left is free, and listed in `free` (so the slots in use
    /// are `events.len() - free.len()`).
    events: Vec<Held>,
    free: Vec<Slot>,
    /// Endpoints deleted since the store opened: an event stored while one was being
    /// deleted must not queue for it afterwards.
    retired: HashSet<EndpointId>,
    /// First attempts waiting in all lanes (not those claimed).
    waiting: usize,
}

/// The number of an event's slot in [`Fresh::events`].
type Slot = u32;

/// An event with first attempts left.
#[derive(Clone, Copy)]
struct Held {
    event: Uuid,
    /// When it was received: its first attempts' due time.
    received_at: UnixMillis,
    /// Its first attempts not yet recorded, waiting or claimed; 0 when the slot is free.
    left: u32,
}

/// One endpoint's first attempts.
struct Lane {
    merchant: MerchantId,
    /// Oldest first: their events' slots.
    waiting: VecDeque<Slot>,
    /// Claimed ones: event → (its slot, lease until).
    claimed: HashMap<Uuid, (Slot, UnixMillis)>,
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
        let queued = endpoints.iter().filter(|e| !self.retired.contains(*e)).count();
        if queued == 0 {
            return 0;
        }
        let slot = self.hold(Held {
            event: event.uuid(),
            received_at,
            left: u32::try_from(queued).expect("an event has a few endpoints"),
        });
        for endpoint in endpoints.iter().filter(|e| !self.retired.contains(*e)) {
            let lane = self.lanes.entry(endpoint.clone()).or_insert_with(|| Lane {
                merchant: merchant.clone(),
                waiting: VecDeque::new(),
                claimed: HashMap::new(),
            });
            lane.waiting.push_back(slot);
        }
        self.waiting += queued;
        queued
    }

    /// A slot for an event: a free one, or a new one.
    fn hold(&mut self, held: Held) -> Slot {
        if let Some(slot) = self.free.pop() {
            self.events[slot as usize] = held;
            return slot;
        }
        self.events.push(held);
        Slot::try_from(self.events.len() - 1).expect("fewer events held than WAITING_LIMIT and those claimed")
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
        for (event, (slot, until)) in &mut lane.claimed {
            if claims.len() >= limit {
                break;
            }
            if *until <= now {
                *until = lease_until;
                claims.push(FreshClaim {
                    event: EventId::from_uuid(*event),
                    merchant: lane.merchant.clone(),
                    received_at: self.events[*slot as usize].received_at,
                });
            }
        }
        while claims.len() < limit {
            let Some(&slot) = lane.waiting.front() else {
                break;
            };
            let held = self.events[slot as usize];
            if !is_due(held.received_at, now, horizon) {
                break;
            }
            lane.waiting.pop_front();
            self.waiting -= 1;
            if lane.waiting.is_empty() {
                // What a burst grew is handed back once it is through.
                lane.waiting.shrink_to(SMALL);
            }
            lane.claimed.insert(held.event, (slot, lease_until));
            claims.push(FreshClaim {
                event: EventId::from_uuid(held.event),
                merchant: lane.merchant.clone(),
                received_at: held.received_at,
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
        let due = |slot: &Slot| self.events[*slot as usize].received_at;
        let expired = lane
            .claimed
            .values()
            .filter(|(_, until)| *until <= now)
            .map(|(slot, _)| due(slot));
        let waiting = lane
            .waiting
            .iter()
            .map(due)
            .take_while(|due| is_due(*due, now, horizon));
        let mut due: Vec<UnixMillis> = expired.chain(waiting).take(limit).collect();
        due.sort_unstable();
        due
    }

    /// When the oldest first attempt still waiting for the endpoint was due.
    pub fn next_due(&self, endpoint: &EndpointId) -> Option<UnixMillis> {
        let slot = self.lanes.get(endpoint)?.waiting.front()?;
        Some(self.events[*slot as usize].received_at)
    }

    /// An attempt ended. `Some(last)` if it was a claimed first attempt, now done,
    /// with `last` telling whether its event has none left; `None` if it was not one
    /// (or another attempt of it ended first).
    pub fn finish(&mut self, endpoint: &EndpointId, event: &EventId) -> Option<bool> {
        let (slot, _) = self.lanes.get_mut(endpoint)?.claimed.remove(&event.uuid())?;
        Some(self.done(slot))
    }

    /// Drops a first attempt, waiting or claimed (its event was replayed or deleted):
    /// `Some(last)` as for [`Fresh::finish`] if there was one. An attempt of it under
    /// way changes nothing when it ends.
    pub fn drop_delivery(&mut self, endpoint: &EndpointId, event: &EventId) -> Option<bool> {
        let key = event.uuid();
        let lane = self.lanes.get_mut(endpoint)?;
        let slot = match lane.claimed.remove(&key) {
            Some((slot, _)) => slot,
            None => {
                let at = lane
                    .waiting
                    .iter()
                    .position(|slot| self.events[*slot as usize].event == key)?;
                self.waiting -= 1;
                lane.waiting.remove(at).expect("just found it")
            }
        };
        Some(self.done(slot))
    }

    /// Drops every first attempt of a deleted endpoint and refuses new ones. Returns
    /// the events of those dropped, and those of them left with no first attempt.
    pub fn retire(&mut self, endpoint: &EndpointId) -> (Vec<EventId>, Vec<EventId>) {
        self.retired.insert(endpoint.clone());
        let Some(lane) = self.lanes.remove(endpoint) else {
            return (Vec::new(), Vec::new());
        };
        self.waiting -= lane.waiting.len();
        let slots = lane
            .waiting
            .into_iter()
            .chain(lane.claimed.into_values().map(|(slot, _)| slot));
        let mut dropped = Vec::new();
        let mut emptied = Vec::new();
        for slot in slots {
            let event = EventId::from_uuid(self.events[slot as usize].event);
            if self.done(slot) {
                emptied.push(event.clone());
            }
            dropped.push(event);
        }
        (dropped, emptied)
    }

    /// One of the event's first attempts is done; returns whether it was the last (its
    /// slot is free then).
    fn done(&mut self, slot: Slot) -> bool {
        let held = &mut self.events[slot as usize];
        held.left -= 1;
        if held.left > 0 {
            return false;
        }
        self.free.push(slot);
        if self.held() == 0 {
            // What a burst grew is handed back once it is through.
            self.events.clear();
            self.events.shrink_to(SMALL);
            self.free.clear();
            self.free.shrink_to(SMALL);
        }
        true
    }

    /// Slots in use: events with first attempts left.
    fn held(&self) -> usize {
        self.events.len() - self.free.len()
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
        assert!(fresh.events.capacity() >= LANE_LIMIT);
        let claimed = fresh.claim(a, 5, 50, HORIZON, LANE_LIMIT);
        assert_eq!(claimed.len(), LANE_LIMIT);
        assert!(fresh.lanes[a].waiting.capacity() <= SMALL);
        for (claim, event) in claimed.iter().zip(&events) {
            assert_eq!(&claim.event, event, "claimed in the order stored, under the same id");
            assert_eq!(fresh.finish(a, &claim.event), Some(true));
        }
        assert_eq!(fresh.held(), 0);
        assert!(fresh.events.capacity() <= SMALL, "{}", fresh.events.capacity());
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
    fn a_slot_freed_by_one_event_serves_the_next_without_mixing_them_up() {
        let (merchant, ep, ev) = ids();
        let mut fresh = Fresh::default();
        fresh.add(&ev[0], &merchant, 10, &ep);
        fresh.add(&ev[1], &merchant, 20, &ep[..1]);
        assert_eq!(fresh.claim(&ep[0], 50, 100, HORIZON, 2).len(), 2);
        assert_eq!(fresh.finish(&ep[0], &ev[1]), Some(true));
        // The second event's slot is free, and taken by the third.
        fresh.add(&ev[2], &merchant, 30, &ep[1..]);
        assert_eq!(fresh.events.len(), 2, "the freed slot is reused");
        let claimed: Vec<_> = fresh
            .claim(&ep[1], 50, 100, HORIZON, 16)
            .into_iter()
            .map(|c| (c.event, c.received_at))
            .collect();
        assert_eq!(claimed, [(ev[0].clone(), 10), (ev[2].clone(), 30)]);
        assert_eq!(fresh.finish(&ep[1], &ev[1]), None, "the freed event is not the new one");
        assert_eq!(fresh.finish(&ep[0], &ev[0]), Some(false));
        assert_eq!(fresh.finish(&ep[1], &ev[2]), Some(true));
        assert_eq!(fresh.finish(&ep[1], &ev[0]), Some(true));
        assert_eq!(fresh.held(), 0);
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
