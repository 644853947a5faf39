//! Delivery: one signed HTTP attempt to one endpoint, and what became of it.

mod client;
mod signing;

pub use client::{AttemptReport, DeliveryClient};
pub use signing::{sign, signature_header};
