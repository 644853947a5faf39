//! Integration tests: the real server on a random port, a fresh data directory per
//! test, real HTTP receivers. `TEST_LOG=1 cargo test` shows the gateway's logs.

mod admin;
mod bench_tool;
mod crash;
mod delivery;
mod durability;
mod fuzz;
#[path = "../common/gateway.rs"]
mod gateway;
mod helpers;
mod ingest;
mod maintenance;
mod operations;
mod process;
mod retries;
mod security_admin;
mod security_egress;
mod security_inbound;
mod security_limits;
mod security_secrets;
mod smoke;
mod store_contract;
