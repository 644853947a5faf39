//! `POST /ingest/{merchant_id}`: authenticate the provider, read and check the body,
//! deduplicate, store the event with its deliveries durably, answer 202.

pub(crate) mod handler;
pub mod limits;
mod request;
pub mod verify;

pub use handler::ingest_event;
pub use limits::IngestLimiter;
pub use request::{parse_event, presented_token, read_body};
