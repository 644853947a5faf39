//! Integration tests: the real server on a random port, a fresh data directory per
//! test, real HTTP receivers. `TEST_LOG=1 cargo test` shows the gateway's logs.

mod admin;
mod crash;
mod delivery;
mod durability;
#[path = "../common/gateway.rs"]
mod gateway;
mod helpers;
mod ingest;
mod maintenance;
mod operations;
mod process;
mod retries;
mod smoke;
mod store_contract;
