//! Deliveries (one event to one endpoint) and the attempts made for them.

use serde::{Deserialize, Serialize};

use super::{EndpointId, EventId, MerchantId, UnixMillis};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its first attempt or a retry (`next_attempt_at`).
    Pending,
    /// An attempt got a 2xx.
    Succeeded,
    /// Retries exhausted, or its endpoint was deleted.
    Failed,
}

/// The state of one event's delivery to one endpoint.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Delivery {
    pub event_id: EventId,
    pub endpoint_id: EndpointId,
    pub merchant_id: MerchantId,
    pub status: DeliveryStatus,
    /// Attempts made since the delivery was created or last replayed.
    pub attempts: u32,
    /// When the next attempt is due; `None` unless pending.
    pub next_attempt_at: Option<UnixMillis>,
    pub last_attempt_at: Option<UnixMillis>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    /// When the event was received (delivery lag is measured from here).
    pub created_at: UnixMillis,
    pub updated_at: UnixMillis,
}

impl Delivery {
    pub fn new(event_id: EventId, endpoint_id: EndpointId, merchant_id: MerchantId, now: UnixMillis) -> Self {
        Self {
            event_id,
            endpoint_id,
            merchant_id,
            status: DeliveryStatus::Pending,
            attempts: 0,
            next_attempt_at: Some(now),
            last_attempt_at: None,
            last_status_code: None,
            last_error: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// How one attempt ended; the label of `hookrelay_delivery_attempts_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    Success,
    HttpError,
    Timeout,
    ConnectError,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::HttpError => "http_error",
            Self::Timeout => "timeout",
            Self::ConnectError => "connect_error",
        }
    }
}

/// One HTTP attempt, kept for the attempts log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub event_id: EventId,
    pub endpoint_id: EndpointId,
    /// 1 for the first attempt of the delivery (counting restarts from a replay).
    pub attempt: u32,
    pub attempted_at: UnixMillis,
    pub outcome: AttemptOutcome,
    pub status_code: Option<u16>,
    pub error: Option<String>,
    pub duration_ms: u64,
}
