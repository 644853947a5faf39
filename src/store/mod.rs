//! Storage: the one place that knows a backend. The rest of the program sees the
//! [`Store`] trait behind an `Arc<dyn Store>`, picked once at start-up by [`open`].

mod disk;
mod open;
mod repo;
mod sled;

pub use disk::DiskGuard;
pub use open::open;
pub use repo::{AcceptOutcome, Claim, Claimed, Disposition, Page, PageRequest, Store, StoreError};
pub use sled::keys as sled_keys;
pub use sled::records as sled_records;
pub use sled::SledStore;
/// First attempts one endpoint holds in memory before new events queue on disk.
pub use sled::LANE_LIMIT as SLED_LANE_LIMIT;
