//! Delivery: one signed HTTP attempt to one endpoint, and what became of it.

mod client;
pub mod egress;
mod signing;

pub use client::{AttemptReport, DeliveryClient, Destination};
pub use egress::{EgressGuard, EgressPolicy};
pub use signing::{sign, signature_header};
