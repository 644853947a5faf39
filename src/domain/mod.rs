//! Validated types of the data path, without I/O. A value of these types has been
//! parsed at the edge and is valid from then on.

mod access;
mod delivery;
mod endpoint;
mod event;
mod ids;
mod merchant;
mod time;
mod verification;

pub use access::{AdminToken, AdminTokenSecret, AuditEntry, AuditResource, TokenHash, TokenName, TokenScope};
pub use delivery::{Attempt, AttemptOutcome, Delivery, DeliveryStatus};
pub use endpoint::{Endpoint, EndpointSecret, EndpointUrl, EventTypeFilter, RetiredSecret};
pub use event::{Event, IdempotencyKey};
pub use ids::{EndpointId, EventId, MerchantId};
pub use merchant::{IngestToken, Merchant, MerchantUpdate};
pub use time::{now_ms, to_rfc3339, UnixMillis};
pub use verification::{
    standard_webhooks_key, ProviderSecret, SignatureEncoding, Verification, VerificationScheme, VerificationSpec,
};
