//! SIGKILL in the middle of an ingest stream: every acknowledged event still reaches
//! every endpoint it matched, once the process is back on the same data directory.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng as _;
use serde_json::json;

use crate::gateway::{Gateway, GatewayProcess};
use crate::helpers::{Received, Receiver, Reply};

const SENDERS: usize = 4;
const KILLS: usize = 3;

/// The event types sent, in turn; `None` sends no `type`.
const TYPES: [Option<&str>; 4] = [Some("order.created"), Some("order.paid"), Some("order.refunded"), None];

/// What the senders saw.
#[derive(Default)]
struct Ledger {
    /// Provider event id → (event_id answered, type) for every 2xx.
    acked: BTreeMap<String, (String, Option<&'static str>)>,
    /// Provider event ids whose request got no answer (the process died under it).
    unanswered: Vec<String>,
    /// Answers that were neither 202 nor a transport error.
    unexpected: Vec<String>,
}

/// How many of the three endpoints an event of this type matches.
fn matched_endpoints(kind: Option<&str>) -> u64 {
    match kind {
        Some("order.created") | Some("order.paid") => 2,
        _ => 1,
    }
}

/// Sends new events one after another until the process stops answering or `stop` is set.
async fn send_until_cut(
    process: Arc<GatewayProcess>,
    ingest_url: String,
    cycle: usize,
    sender: usize,
    ledger: Arc<Mutex<Ledger>>,
    stop: Arc<AtomicBool>,
) {
    for n in 0..5_000 {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let id = format!("c{cycle}-s{sender}-{n}");
        let kind = TYPES[(n + sender) % TYPES.len()];
        let mut body = json!({ "id": id, "data": { "n": n, "pad": "x".repeat(200) } });
        if let Some(kind) = kind {
            body["type"] = json!(kind);
        }
        match process.ingest(&ingest_url, &body).await {
            Ok((202, answer)) => {
                let mut ledger = ledger.lock().unwrap();
                if answer["deliveries"] != matched_endpoints(kind) {
                    ledger.unexpected.push(format!("{id} ({kind:?}) got {answer}"));
                }
                let event_id = answer["event_id"].as_str().unwrap_or_default().to_owned();
                ledger.acked.insert(id, (event_id, kind));
            }
            Ok((status, answer)) => {
                ledger
                    .lock()
                    .unwrap()
                    .unexpected
                    .push(format!("{id}: {status} {answer}"));
                return;
            }
            Err(_) => {
                ledger.lock().unwrap().unanswered.push(id);
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_reaches_every_matched_endpoint_across_sigkills() {
    let created = Receiver::start().await;
    let paid = Receiver::start().await;
    let everything = Receiver::start().await;
    let gateway = Gateway::new();
    let mut process = gateway.start().await;
    let merchant = process.create_merchant("m1").await;
    process
        .create_endpoint("m1", &created.url("/created"), &["order.created"])
        .await;
    process.create_endpoint("m1", &paid.url("/paid"), &["order.paid"]).await;
    process.create_endpoint("m1", &everything.url("/all"), &[]).await;
    let ingest_url = merchant["ingest_url"].as_str().unwrap().to_owned();

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    for cycle in 0..KILLS {
        let shared = Arc::new(process);
        let stop = Arc::new(AtomicBool::new(false));
        let senders: Vec<_> = (0..SENDERS)
            .map(|sender| {
                let (p, url, l, s) = (shared.clone(), ingest_url.clone(), ledger.clone(), stop.clone());
                tokio::spawn(send_until_cut(p, url, cycle, sender, l, s))
            })
            .collect();
        // Kill at a random-ish point: after this many more acknowledgements.
        let target = ledger.lock().unwrap().acked.len() + rand::rng().random_range(60..140);
        let deadline = Instant::now() + Duration::from_secs(20);
        while ledger.lock().unwrap().acked.len() < target {
            assert!(Instant::now() < deadline, "the senders stalled before the kill");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        shared.sigkill();
        stop.store(true, Ordering::SeqCst);
        for sender in senders {
            sender.await.unwrap();
        }
        let mut killed = Arc::try_unwrap(shared).unwrap_or_else(|_| panic!("a sender kept the process"));
        killed.expect_exit(Duration::from_secs(10)).await;
        process = gateway.start().await;
    }

    let ledger = Arc::try_unwrap(ledger).ok().unwrap().into_inner().unwrap();
    assert!(
        ledger.unexpected.is_empty(),
        "unexpected answers: {:#?}",
        ledger.unexpected
    );
    let required = |filter: Option<&str>| -> BTreeMap<String, String> {
        ledger
            .acked
            .iter()
            .filter(|(_, (_, kind))| filter.is_none() || *kind == filter)
            .map(|(id, (event_id, _))| (id.clone(), event_id.clone()))
            .collect()
    };
    let receivers = [
        ("order.created", &created, required(Some("order.created"))),
        ("order.paid", &paid, required(Some("order.paid"))),
        ("unfiltered", &everything, required(None)),
    ];

    let deadline = Instant::now() + Duration::from_secs(30);
    for (name, receiver, required) in &receivers {
        loop {
            let seen: BTreeSet<String> = receiver.received().iter().map(body_id).collect();
            let missing: Vec<_> = required.keys().filter(|id| !seen.contains(*id)).collect();
            if missing.is_empty() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name}: {} acknowledged events never arrived, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(10)]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // One webhook-id per provider event, on every receiver and every copy; for an
    // acknowledged event it is the event_id of the 202.
    let mut webhook_ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut duplicates = 0;
    for (name, receiver, _) in &receivers {
        let got = receiver.received();
        let mut copies: BTreeMap<String, usize> = BTreeMap::new();
        for request in &got {
            let id = body_id(request);
            let kind = request.json()["type"].as_str().map(str::to_owned);
            if *name != "unfiltered" {
                assert_eq!(
                    kind.as_deref(),
                    Some(*name),
                    "{name} got an event of another type: {id}"
                );
            }
            webhook_ids
                .entry(id)
                .or_default()
                .insert(request.header("webhook-id").to_owned());
            *copies.entry(request.header("webhook-id").to_owned()).or_default() += 1;
        }
        let extra: usize = copies.values().map(|n| n - 1).sum();
        println!(
            "{name}: {} requests, {} events, {extra} duplicates",
            got.len(),
            copies.len()
        );
        duplicates += extra;
    }
    for (id, ids) in &webhook_ids {
        assert_eq!(ids.len(), 1, "{id} arrived under several webhook-ids: {ids:?}");
        if let Some((event_id, _)) = ledger.acked.get(id) {
            assert_eq!(
                ids.first(),
                Some(event_id),
                "{id}: webhook-id is not the acknowledged event_id"
            );
        }
    }

    // Events the process died under may or may not have been stored; count what became of them.
    let mut delivered_unacked = 0;
    let mut delivered_then_forgotten = Vec::new();
    for id in &ledger.unanswered {
        let Some(ids) = webhook_ids.get(id) else { continue };
        delivered_unacked += 1;
        let event_id = ids.first().unwrap();
        let (status, _) = process
            .admin(
                reqwest::Method::GET,
                &format!("/api/v1/merchants/m1/events/{event_id}"),
                None,
            )
            .await;
        if status == 404 {
            delivered_then_forgotten.push(id.clone());
        }
    }
    println!(
        "{} events acknowledged, {} unanswered at the kills ({delivered_unacked} of those delivered anyway, \
         {} delivered but not stored), {duplicates} duplicate deliveries in all",
        ledger.acked.len(),
        ledger.unanswered.len(),
        delivered_then_forgotten.len()
    );

    process.terminate();
    let status = process.expect_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "{}", process.stderr());
}

fn body_id(request: &Received) -> String {
    request.json()["id"].as_str().unwrap_or_default().to_owned()
}

/// A crash while an event is being written leaves its dedupe key and some of its
/// records, but not its event record, which is written last (sled recovers a prefix of
/// its log). The provider never got a 2xx and sends the event again: it must be
/// accepted and delivered under the id the cut-short write gave it, so a receiver
/// never sees one event under two ids.
#[tokio::test]
async fn an_event_cut_short_by_a_crash_is_written_again_under_its_first_id_when_resent() {
    let receiver = Receiver::start().await;
    let mut app = crate::helpers::spawn_app().await;
    app.create_merchant("acme").await;
    app.create_endpoint("acme", &receiver.url("/hook"), &[]).await;
    app.stop().await;

    // What a crash after the first two writes of the event leaves on disk.
    let cut = "evt_019ad0c0ffee7000800000000000cafe".to_owned();
    {
        let db = sled::open(app.data_dir.path()).unwrap();
        db.open_tree("dedupe")
            .unwrap()
            .insert("acme\0p-cut", cut.as_bytes())
            .unwrap();
        db.open_tree("payloads")
            .unwrap()
            .insert(cut.as_bytes(), &br#"{"id":"p-cut","type":"order.paid"}"#[..])
            .unwrap();
        db.flush().unwrap();
    }

    let app = app.restart().await;
    let (status, merchant) = app.post("/api/v1/merchants/acme/reveal-token", json!({})).await;
    assert_eq!(status, 200, "{merchant}");
    let body = r#"{"id":"p-cut","type":"order.paid","data":{"amount":"1.00"}}"#;
    let (status, accepted) = app.ingest(&merchant, body).await;
    assert_eq!(status, 202, "{accepted}");
    assert_eq!(accepted["event_id"], cut, "resumed under its first id: {accepted}");

    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("webhook-id"), cut);
    assert_eq!(got[0].body, body.as_bytes(), "the body of the resend, stored whole");
    app.wait_for_deliveries("acme", &cut, "succeeded", Duration::from_secs(10))
        .await;

    // Now complete: another resend is a duplicate of that same event.
    let (status, duplicate) = app.ingest(&merchant, body).await;
    assert_eq!(status, 200, "{duplicate}");
    assert_eq!(duplicate["event_id"], cut);
    assert_eq!(duplicate["status"], "duplicate");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1, "delivered once");
}

/// First attempts wait in memory, under one `fresh` key per event in the store
/// (`src/store/sled/fresh.rs`), not as queue entries. After a SIGKILL the gateway makes
/// each acknowledged event's first attempt for every endpoint that has no record of it
/// (waiting, or under way at the kill), and does not repeat one that was recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_attempts_not_recorded_at_a_sigkill_are_made_after_it_and_recorded_ones_are_not_repeated() {
    const EVENTS: usize = 50;
    let fast = Receiver::start().await;
    // Holds every request: 16 attempts under way, the other first attempts waiting.
    let stuck = Receiver::answering(|_| Reply::after(Duration::from_secs(600), 200)).await;
    let gateway = Gateway::new();
    let process = gateway.start().await;
    let merchant = process.create_merchant("m1").await;
    process.create_endpoint("m1", &fast.url("/fast"), &[]).await;
    process.create_endpoint("m1", &stuck.url("/stuck"), &[]).await;
    let ingest_url = merchant["ingest_url"].as_str().unwrap().to_owned();
    let mut acked = BTreeMap::new();
    for n in 0..EVENTS {
        let id = format!("first-{n}");
        let (status, answer) = process
            .ingest(&ingest_url, &json!({ "id": id, "type": "order.paid" }))
            .await
            .unwrap();
        assert_eq!(status, 202, "{answer}");
        acked.insert(id, answer["event_id"].as_str().unwrap().to_owned());
    }
    fast.wait_for(EVENTS, Duration::from_secs(10)).await;
    // Attempt outcomes reach sled's log within its flush interval (500 ms), not at once.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let held_at_kill = stuck.received().len();
    assert!(
        (1..EVENTS).contains(&held_at_kill),
        "{held_at_kill} attempts under way at the kill; some must still be waiting"
    );
    process.sigkill();
    let mut killed = process;
    killed.expect_exit(Duration::from_secs(10)).await;

    stuck.answer_with(|_| Reply::status(200));
    let mut process = gateway.start().await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let after: BTreeSet<String> = stuck.received()[held_at_kill..].iter().map(body_id).collect();
        if after.len() == EVENTS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the restart the held endpoint got {} of {EVENTS} events",
            after.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for request in &stuck.received()[held_at_kill..] {
        assert_eq!(
            request.header("webhook-id"),
            acked[&body_id(request)],
            "the acknowledged id"
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(fast.received().len(), EVENTS, "recorded deliveries are not repeated");
    assert_eq!(
        process.metric("hookrelay_queue_depth").await,
        0.0,
        "nothing left pending after the restart"
    );
    process.terminate();
    process.expect_exit(Duration::from_secs(10)).await;
}
