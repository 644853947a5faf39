//! The storage contract every backend implements.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::domain::{Attempt, Delivery, Endpoint, EndpointId, Event, EventId, Merchant, MerchantId, UnixMillis};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("already exists")]
    AlreadyExists,
    #[error("the merchant already has {0} endpoints")]
    LimitReached(usize),
    #[error("not found")]
    NotFound,
    #[error("the store is in use by another process: {0}")]
    Locked(String),
    #[error("the data directory cannot be used: {0}")]
    Incompatible(String),
    #[error("store failure while {context}")]
    Backend {
        context: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    pub fn backend(context: &'static str, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        Self::Backend {
            context,
            source: source.into(),
        }
    }
}

/// Keyset pagination: the key of the last item seen, and how many to return.
#[derive(Clone, Debug)]
pub struct PageRequest {
    pub after: Option<String>,
    pub limit: usize,
}

#[derive(Debug)]
pub struct Page<T> {
    pub items: Vec<T>,
    /// The key to pass as `after` for the next page; `None` on the last page.
    pub next: Option<String>,
}

/// What `accept_event` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// Stored durably with this many deliveries.
    Accepted { event_id: EventId, deliveries: usize },
    /// The idempotency key was seen before; nothing was written.
    Duplicate { event_id: EventId },
}

/// A due delivery handed to one worker under a lease.
#[derive(Clone, Debug)]
pub struct Claim {
    pub event_id: EventId,
    pub endpoint_id: EndpointId,
    pub merchant_id: MerchantId,
    /// The due time it was claimed under; the backend's handle on the queue entry.
    pub due: UnixMillis,
    /// Number of this attempt (1 for the first).
    pub attempt: u32,
    /// When the event was received.
    pub received_at: UnixMillis,
    pub payload: Bytes,
}

/// What to do with a delivery after an attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Disposition {
    Succeeded,
    RetryAt(UnixMillis),
    Failed,
}

/// Claimed work and when to look again.
#[derive(Debug, Default)]
pub struct Claimed {
    pub claims: Vec<Claim>,
    /// Earliest due time among the endpoint's unclaimed, unleased deliveries.
    pub next_due: Option<UnixMillis>,
}

/// Durable state of hookrelay. Every method that returns `Ok` after a write from the
/// admin API or ingest has made that write durable (fsync'd or committed).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // Merchants.
    async fn create_merchant(&self, merchant: &Merchant) -> Result<(), StoreError>;
    async fn get_merchant(&self, id: &MerchantId) -> Result<Option<Merchant>, StoreError>;
    async fn list_merchants(&self, page: PageRequest) -> Result<Page<Merchant>, StoreError>;
    /// Deletes the merchant with its endpoints, events and deliveries.
    async fn delete_merchant(&self, id: &MerchantId) -> Result<bool, StoreError>;
    /// Applies `update` atomically and returns the merchant as stored; `NotFound` when gone.
    async fn update_merchant(
        &self,
        id: &MerchantId,
        update: &crate::domain::MerchantUpdate,
    ) -> Result<Merchant, StoreError>;

    // Endpoints.
    /// Fails with `LimitReached` when the merchant already has `limit` endpoints.
    async fn create_endpoint(&self, endpoint: &Endpoint, limit: usize) -> Result<(), StoreError>;
    async fn get_endpoint(&self, merchant: &MerchantId, id: &EndpointId) -> Result<Option<Endpoint>, StoreError>;
    /// The merchant's endpoints, oldest first.
    async fn list_endpoints(&self, merchant: &MerchantId) -> Result<Vec<Endpoint>, StoreError>;
    async fn list_all_endpoints(&self) -> Result<Vec<Endpoint>, StoreError>;
    /// Replaces a stored endpoint; `NotFound` when it is gone.
    async fn update_endpoint(&self, endpoint: &Endpoint) -> Result<(), StoreError>;
    /// Deletes the endpoint; its pending deliveries become failed.
    async fn delete_endpoint(&self, merchant: &MerchantId, id: &EndpointId) -> Result<bool, StoreError>;

    // Events.
    /// Stores the event and one pending delivery per endpoint, durably, unless its
    /// idempotency key names a stored event already (`Duplicate`). A crash before this
    /// returns may leave part of the event behind; a resend with the same key then
    /// stores it whole under the id it was first given.
    async fn accept_event(&self, event: &Event, endpoints: &[EndpointId]) -> Result<AcceptOutcome, StoreError>;
    /// Newest first, optionally only one type.
    async fn list_events(
        &self,
        merchant: &MerchantId,
        event_type: Option<&str>,
        page: PageRequest,
    ) -> Result<Page<Event>, StoreError>;
    /// The event with its payload.
    async fn get_event(&self, merchant: &MerchantId, id: &EventId) -> Result<Option<Event>, StoreError>;
    async fn list_deliveries(&self, event: &EventId) -> Result<Vec<Delivery>, StoreError>;
    /// Every attempt made for the event, on all its endpoints, in the order they were
    /// recorded, a page at a time; each attempt once, wherever a backend keeps it.
    async fn list_attempts(&self, event: &EventId, page: PageRequest) -> Result<Page<Attempt>, StoreError>;
    /// Makes the event's deliveries to these endpoints pending again (creating them
    /// where missing), due now, with a fresh attempt budget. An attempt of one of them
    /// under way meanwhile is recorded when it ends but moves nothing.
    async fn replay_event(&self, event: &Event, endpoints: &[EndpointId], now: UnixMillis)
        -> Result<usize, StoreError>;
    /// Re-queues the endpoint's failed deliveries of events received since `since`.
    async fn recover_endpoint(
        &self,
        merchant: &MerchantId,
        endpoint: &EndpointId,
        since: UnixMillis,
        now: UnixMillis,
    ) -> Result<usize, StoreError>;

    // The delivery queue.
    /// Leases up to `limit` deliveries of the endpoint due at `now` for `lease`.
    /// A delivery scheduled more than `max_ahead` after `now` counts as due: no
    /// schedule is that far out unless the clock went back since it was written.
    async fn claim_due(
        &self,
        endpoint: &EndpointId,
        now: UnixMillis,
        limit: usize,
        lease: Duration,
        max_ahead: Duration,
    ) -> Result<Claimed, StoreError>;
    /// Records an attempt and moves the delivery on. Ignores the move (but keeps the
    /// attempt) when the delivery changed since it was claimed (e.g. replayed).
    async fn complete_attempt(&self, claim: &Claim, attempt: &Attempt, next: Disposition) -> Result<(), StoreError>;
    /// Deletes up to `batch` finished events (no delivery pending) received before
    /// `cutoff`, with their payloads, deliveries, attempts and dedupe keys. Returns
    /// how many it deleted; fewer than `batch` means nothing more is due.
    async fn purge_expired(&self, cutoff: UnixMillis, batch: usize) -> Result<usize, StoreError>;
    /// Deliveries pending, scheduled retries included.
    async fn queue_depth(&self) -> Result<u64, StoreError>;
    /// Makes everything written so far durable (used at shutdown).
    async fn sync(&self) -> Result<(), StoreError>;
    /// Syncs, then releases what the backend holds beyond this handle (sled: the
    /// commit threads and their database handle). Writes after this fail.
    async fn close(&self) -> Result<(), StoreError>;
    /// Why the store can no longer promise durability (a sync failed or hung), if so.
    /// The application stops on it rather than go on answering from such a store.
    fn failure(&self) -> Option<String>;

    /// A delivery, for tests and the admin API.
    async fn get_delivery(&self, event: &EventId, endpoint: &EndpointId) -> Result<Option<Delivery>, StoreError>;

    // Admin tokens (kept as their SHA-256 only) and the audit log.
    /// Stores a token; `AlreadyExists` when its name (or hash) is taken.
    async fn create_admin_token(&self, token: &crate::domain::AdminToken) -> Result<(), StoreError>;
    /// The token whose SHA-256 is `hash`.
    async fn find_admin_token(
        &self,
        hash: &crate::domain::TokenHash,
    ) -> Result<Option<crate::domain::AdminToken>, StoreError>;
    /// Every stored token, by name.
    async fn list_admin_tokens(&self) -> Result<Vec<crate::domain::AdminToken>, StoreError>;
    async fn delete_admin_token(&self, name: &crate::domain::TokenName) -> Result<bool, StoreError>;
    /// Appends to the audit log. A change is durable when this returns. A refusal
    /// (401/403) is not waited on, and only the newest `keep_refusals` refusals are
    /// kept: a flood of bad tokens must cost no fsyncs, not grow the store, and not
    /// push the record of changes out.
    async fn append_audit(&self, entry: &crate::domain::AuditEntry, keep_refusals: usize) -> Result<(), StoreError>;
    /// The audit log, changes and refusals together, newest first.
    async fn list_audit(&self, page: PageRequest) -> Result<Page<crate::domain::AuditEntry>, StoreError>;
}
