//! hookrelay: a webhook relay and fan-out gateway.
//!
//! # Layout: follow a webhook through the modules
//!
//! ```text
//! provider ──POST /ingest/{merchant_id}──▶ ingest      auth, size, parse, dedupe
//!                                            │
//!                                            ▼
//!                                          store       event + deliveries in one
//!                                            │         atomic, fsync'd write (sled)
//!                                            ▼
//!                                          dispatcher  one worker per endpoint claims
//!                                            │         due deliveries under a lease
//!                                            ▼
//!                                          delivery    signed POST, outcome classified,
//!                                            │         retry scheduled (dispatcher::retry)
//!                                            ▼
//!                                          metrics     counters, histograms, queue depth
//! operator ──/api/v1──▶ admin (beside the data path: merchants, endpoints, events, replay)
//! ```
//!
//! `startup` holds the one route table and wires these together; `config` reads the
//! settings; `shutdown` turns SIGTERM/SIGINT into a stop token; `domain` holds the
//! validated types everything passes around; `secrets` holds the key and cipher that
//! keep tokens and signing secrets encrypted in the store.

pub mod admin;
pub mod allocator;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod dispatcher;
pub mod domain;
pub mod error;
pub mod extract;
pub mod health;
pub mod ingest;
pub mod metrics;
pub mod retention;
pub mod secrets;
pub mod shutdown;
pub mod startup;
pub mod store;
pub mod telemetry;
