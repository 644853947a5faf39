//! Validated types of the data path, without I/O. A value of these types has been
//! parsed at the edge and is valid from then on.

mod delivery;
mod endpoint;
mod event;
mod ids;
mod merchant;
mod time;

pub use delivery::{Attempt, AttemptOutcome, Delivery, DeliveryStatus};
pub use endpoint::{Endpoint, EndpointSecret, EndpointUrl, EventTypeFilter, RetiredSecret};
pub use event::{Event, IdempotencyKey};
pub use ids::{EndpointId, EventId, MerchantId};
pub use merchant::{IngestToken, Merchant};
pub use time::{now_ms, to_rfc3339, UnixMillis};
