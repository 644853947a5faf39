//! Fault-injection suite: the real `hookrelay` binary under crashes, outages, bad
//! receivers, a full disk, damaged data directories, signals, clock jumps, slow
//! clients and a soak. Each fault is one test; each writes its row (fault, expected,
//! observed, result) to `target/faults-report.md` and prints it.
//!
//! `cargo test --test faults` runs the quick profile; `HOOKRELAY_FAULTS=long` the long
//! one (by hand, see `docs/faults.md`). Tests that load the machine or time latencies
//! run alone (`support::exclusive`).

mod bad_receivers;
mod clock;
mod data_dir;
mod disk_full;
#[path = "../common/gateway.rs"]
mod gateway;
mod net;
mod receivers_down;
mod report;
mod sigkill;
mod sigterm;
mod slow_clients;
mod soak;
mod support;
