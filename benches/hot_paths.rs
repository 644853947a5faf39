//! Micro-benchmarks of the pure functions every delivery runs through: signing, the
//! sled key layout and queue entries, and the records of deliveries and attempts in
//! each layout (JSON: layout 1; postcard: layout 2; a delivery record holding its
//! first attempt: layout 3).
//!
//! `cargo bench --bench hot_paths` (add `-- --quick` for a fast pass). Results and
//! their context: docs/benchmarks.md.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hookrelay::delivery::{sign, signature_header};
use hookrelay::domain::{
    Attempt, AttemptOutcome, Delivery, DeliveryStatus, EndpointId, EndpointSecret, EventId, MerchantId,
};
use hookrelay::store::sled_keys as keys;
use hookrelay::store::sled_records as stored;

/// A DashX-style event body of about 1 KiB, as the bench tool sends.
fn body() -> Vec<u8> {
    let mut body = br#"{"id":"evt_1","type":"checkout_session.completed","data":{"object":{"amount":4200,"currency":"usd","pad":""#.to_vec();
    body.resize(1000, b'x');
    body.extend_from_slice(br#""}}}"#);
    body
}

fn signing(c: &mut Criterion) {
    let body = body();
    let secret = EndpointSecret::generate();
    let retired = EndpointSecret::generate();
    let mut group = c.benchmark_group("signing");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("sign 1 KiB", |b| {
        b.iter(|| {
            sign(
                black_box(&secret),
                black_box("evt_1"),
                black_box(1_764_000_000),
                black_box(&body),
            )
        })
    });
    group.bench_function("signature header, 2 secrets (rotation)", |b| {
        b.iter(|| signature_header([&secret, &retired], black_box("evt_1"), 1_764_000_000, black_box(&body)))
    });
    group.finish();
}

fn key_encoding(c: &mut Criterion) {
    let endpoint = EndpointId::generate();
    let event = EventId::generate();
    let queue_key = keys::queue(&endpoint, 1_764_000_000_000, &event);
    let mut group = c.benchmark_group("keys");
    group.bench_function("queue key", |b| {
        b.iter(|| keys::queue(black_box(&endpoint), black_box(1_764_000_000_000), black_box(&event)))
    });
    group.bench_function("parse queue key", |b| {
        b.iter(|| keys::parse_queue(black_box(&queue_key)))
    });
    group.bench_function("delivery key", |b| {
        b.iter(|| keys::delivery(black_box(&event), black_box(&endpoint)))
    });
    let merchant = MerchantId::parse("merchant-1").unwrap();
    let entry = keys::queue_entry(&merchant, 2, 1_764_000_000_000);
    group.bench_function("queue entry", |b| {
        b.iter(|| keys::queue_entry(black_box(&merchant), black_box(2), black_box(1_764_000_000_000)))
    });
    group.bench_function("parse queue entry", |b| {
        b.iter(|| keys::parse_queue_entry(black_box(&entry)))
    });
    group.finish();
}

fn records(c: &mut Criterion) {
    let merchant = MerchantId::parse("merchant-1").unwrap();
    let delivery = Delivery::new(EventId::generate(), EndpointId::generate(), merchant, 1_764_000_000_000);
    let json = stored::encode(&delivery);
    let compact = stored::encode_compact(&delivery);
    let attempt = Attempt {
        event_id: delivery.event_id.clone(),
        endpoint_id: delivery.endpoint_id.clone(),
        attempt: 1,
        attempted_at: 1_764_000_000_000,
        outcome: AttemptOutcome::Success,
        status_code: Some(200),
        error: None,
        duration_ms: 1,
    };
    let mut group = c.benchmark_group("records");
    group.bench_function("encode delivery, JSON", |b| {
        b.iter(|| stored::encode(black_box(&delivery)))
    });
    group.bench_function("encode delivery, postcard", |b| {
        b.iter(|| stored::encode_compact(black_box(&delivery)))
    });
    group.bench_function("decode delivery, JSON", |b| {
        b.iter(|| stored::decode::<Delivery>(black_box(&json)).unwrap())
    });
    group.bench_function("decode delivery, postcard", |b| {
        b.iter(|| stored::decode::<Delivery>(black_box(&compact)).unwrap())
    });
    group.bench_function("encode attempt, JSON", |b| {
        b.iter(|| stored::encode(black_box(&attempt)))
    });
    group.bench_function("encode attempt, postcard", |b| {
        b.iter(|| stored::encode_compact(black_box(&attempt)))
    });
    // The one record of a delivery with its latest attempt (layout 5), here a first
    // attempt that succeeded.
    let mut delivered = delivery.clone();
    delivered.status = DeliveryStatus::Succeeded;
    delivered.attempts = 1;
    delivered.next_attempt_at = None;
    delivered.last_attempt_at = Some(attempt.attempted_at);
    delivered.last_status_code = attempt.status_code;
    let held = stored::encode_with_attempt(&delivered, 42, &attempt).expect("the attempt the record describes");
    group.bench_function("encode delivery holding its first attempt", |b| {
        b.iter(|| stored::encode_with_attempt(black_box(&delivered), 42, black_box(&attempt)))
    });
    group.bench_function("decode delivery holding its first attempt", |b| {
        b.iter(|| stored::decode_delivery(black_box(&held)).unwrap())
    });
    group.finish();
}

criterion_group!(benches, signing, key_encoding, records);
criterion_main!(benches);
