//! The dispatcher: one worker per endpoint claims that endpoint's due deliveries and
//! runs attempts with a bounded concurrency, so a slow endpoint only slows itself.
//! An endpoint that stops answering is probed with one delivery at a time
//! (`reachability.rs`) until it answers again.

mod pool;
mod reachability;
mod retry;
mod step;

pub use pool::Dispatcher;
pub use retry::RetryPolicy;
pub use step::{deliver_one, DispatchContext};
