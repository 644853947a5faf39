//! Failed attempts: how they are classified and retried, exhaustion, replay, recover,
//! and retries that outlive a restart.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::helpers::{closed_port, spawn_app, spawn_app_with, wait_for_metric, Receiver, Reply, TestApp};

const UNREACHABLE: &str = "hookrelay_endpoints_unreachable";

const WAIT: Duration = Duration::from_secs(5);

/// Ingests and returns the new event's id, asserting 202 and the number of deliveries.
async fn ingest_queued(app: &TestApp, merchant: &Value, body: &str, deliveries: u64) -> String {
    let (status, answer) = app.ingest(merchant, body).await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["deliveries"], deliveries, "{answer}");
    answer["event_id"].as_str().unwrap().to_owned()
}

fn attempts_total(outcome: &str) -> String {
    format!(r#"hookrelay_delivery_attempts_total{{outcome="{outcome}"}}"#)
}

/// Polls until the event has at least `count` attempts recorded, and returns them.
async fn wait_for_attempts(app: &TestApp, merchant: &str, event_id: &str, count: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let attempts = app.attempts(merchant, event_id).await;
        if attempts.len() >= count {
            return attempts;
        }
        assert!(
            Instant::now() < deadline,
            "only {} attempts recorded: {attempts:#?}",
            attempts.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_receiver_failing_twice_then_recovering_gets_the_event_on_the_third_attempt() {
    let app = spawn_app().await;
    let receiver = Receiver::answering(|n| Reply::status(if n < 2 { 500 } else { 200 })).await;
    let merchant = app.create_merchant("acme").await;
    let endpoint = app.create_endpoint("acme", &receiver.url("/hook"), &[]).await;

    let event_id = ingest_queued(&app, &merchant, r#"{"type":"a.b"}"#, 1).await;
    let delivery = app
        .wait_for_delivery("acme", &event_id, endpoint["id"].as_str().unwrap(), "succeeded", WAIT)
        .await;
    assert_eq!(delivery["attempts"], 3, "{delivery}");
    assert_eq!(delivery["last_status_code"], 200, "{delivery}");

    let attempts = app.attempts("acme", &event_id).await;
    let seen: Vec<_> = attempts
        .iter()
        .map(|a| (a["attempt"].clone(), a["outcome"].clone(), a["status_code"].clone()))
        .collect();
    assert_eq!(
        seen,
        [
            (json!(1), json!("http_error"), json!(500)),
            (json!(2), json!("http_error"), json!(500)),
            (json!(3), json!("success"), json!(200))
        ],
        "{attempts:#?}"
    );
    assert!(
        attempts.iter().all(|a| a["endpoint_id"] == endpoint["id"]),
        "{attempts:#?}"
    );
    let ids: Vec<_> = receiver
        .received()
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    assert_eq!(ids, [event_id.clone(), event_id.clone(), event_id]);
    assert_eq!(app.metric(&attempts_total("http_error")).await, 2.0);
    assert_eq!(app.metric(&attempts_total("success")).await, 1.0);
    assert_eq!(app.metric("hookrelay_deliveries_failed_total").await, 0.0);
    assert_eq!(app.metric("hookrelay_delivery_lag_seconds_count").await, 1.0);
}

#[tokio::test]
async fn a_delivery_that_exhausts_its_attempts_fails_and_a_replay_delivers_it_with_the_same_webhook_id() {
    let app = spawn_app().await;
    let receiver = Receiver::answering(|_| Reply::status(500)).await;
    let merchant = app.create_merchant("acme").await;
    let endpoint = app.create_endpoint("acme", &receiver.url("/hook"), &[]).await;
    let endpoint_id = endpoint["id"].as_str().unwrap();

    let event_id = ingest_queued(&app, &merchant, r#"{"type":"a.b"}"#, 1).await;
    let delivery = app
        .wait_for_delivery("acme", &event_id, endpoint_id, "failed", WAIT)
        .await;
    assert_eq!(delivery["attempts"], 5, "{delivery}");
    assert_eq!(delivery["last_status_code"], 500, "{delivery}");
    assert_eq!(receiver.received().len(), 5);
    assert_eq!(app.metric("hookrelay_deliveries_failed_total").await, 1.0);
    assert_eq!(app.metric("hookrelay_queue_depth").await, 0.0);
    assert_eq!(app.metric(&attempts_total("http_error")).await, 5.0);

    receiver.answer_with(|_| Reply::status(200));
    let (status, body) = app
        .post(&format!("/api/v1/merchants/acme/events/{event_id}/replay"), json!({}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({ "event_id": event_id, "deliveries": 1 }));
    let got = receiver.wait_for(6, WAIT).await;
    assert_eq!(got[5].header("webhook-id"), event_id);
    let delivery = app
        .wait_for_delivery("acme", &event_id, endpoint_id, "succeeded", WAIT)
        .await;
    assert_eq!(
        delivery["attempts"], 1,
        "a replay starts a fresh attempt budget: {delivery}"
    );
    assert_eq!(app.metric("hookrelay_deliveries_failed_total").await, 1.0);
    assert_eq!(app.metric("hookrelay_queue_depth").await, 0.0);
}

#[tokio::test]
async fn a_replay_for_one_endpoint_resends_only_to_that_endpoint() {
    let app = spawn_app().await;
    let (a, b) = (Receiver::start().await, Receiver::start().await);
    let merchant = app.create_merchant("acme").await;
    let endpoint_a = app.create_endpoint("acme", &a.url("/a"), &[]).await;
    let endpoint_b = app.create_endpoint("acme", &b.url("/b"), &[]).await;
    let event_id = ingest_queued(&app, &merchant, r#"{"type":"a.b"}"#, 2).await;
    app.wait_for_deliveries("acme", &event_id, "succeeded", WAIT).await;

    let body = json!({ "endpoint_id": endpoint_a["id"] });
    let (status, body) = app
        .post(&format!("/api/v1/merchants/acme/events/{event_id}/replay"), body)
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["deliveries"], 1, "{body}");

    let got = a.wait_for(2, WAIT).await;
    assert_eq!(got[1].header("webhook-id"), event_id);
    let attempts = wait_for_attempts(&app, "acme", &event_id, 3).await;
    let to = |endpoint: &Value| attempts.iter().filter(|x| x["endpoint_id"] == endpoint["id"]).count();
    assert_eq!((to(&endpoint_a), to(&endpoint_b)), (2, 1), "{attempts:#?}");
    assert_eq!(b.received().len(), 1, "the other endpoint got the replay too");
}

#[tokio::test]
async fn recover_requeues_an_endpoints_failed_deliveries_of_events_received_since_the_given_time() {
    let app = spawn_app().await;
    let receiver = Receiver::answering(|_| Reply::status(500)).await;
    let other = Receiver::answering(|_| Reply::status(500)).await;
    let merchant = app.create_merchant("acme").await;
    let endpoint = app.create_endpoint("acme", &receiver.url("/hook"), &[]).await;
    let other_endpoint = app.create_endpoint("acme", &other.url("/other"), &[]).await;
    let endpoint_id = endpoint["id"].as_str().unwrap();
    let recover_path = format!("/api/v1/merchants/acme/endpoints/{endpoint_id}/recover");

    let before = (chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339();
    let events = [
        ingest_queued(&app, &merchant, r#"{"id":"e1","type":"a.b"}"#, 2).await,
        ingest_queued(&app, &merchant, r#"{"id":"e2","type":"a.b"}"#, 2).await,
    ];
    for event_id in &events {
        app.wait_for_deliveries("acme", event_id, "failed", WAIT).await;
    }
    let after = chrono::Utc::now().to_rfc3339();

    let (status, body) = app.post(&recover_path, json!({ "since": after })).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({ "endpoint_id": endpoint_id, "recovered": 0 }));
    assert_eq!(app.metric("hookrelay_queue_depth").await, 0.0);

    receiver.answer_with(|_| Reply::status(200));
    let (status, body) = app.post(&recover_path, json!({ "since": before })).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({ "endpoint_id": endpoint_id, "recovered": 2 }));
    for event_id in &events {
        app.wait_for_delivery("acme", event_id, endpoint_id, "succeeded", WAIT)
            .await;
        let untouched = app
            .wait_for_delivery("acme", event_id, other_endpoint["id"].as_str().unwrap(), "failed", WAIT)
            .await;
        assert_eq!(untouched["attempts"], 5, "{untouched}");
    }
    let mut recovered: Vec<_> = receiver.received()[10..]
        .iter()
        .map(|r| r.header("webhook-id").to_owned())
        .collect();
    recovered.sort();
    let mut expected = events.to_vec();
    expected.sort();
    assert_eq!(recovered, expected);
    assert_eq!(
        other.received().len(),
        10,
        "another endpoint's deliveries were recovered"
    );
}

#[tokio::test]
async fn an_attempt_slower_than_the_delivery_timeout_is_classified_timeout() {
    let app = spawn_app_with(&[("HOOKRELAY_DELIVERY_TIMEOUT_MS", "300")]).await;
    let receiver = Receiver::answering(|n| {
        if n == 0 {
            Reply::after(Duration::from_millis(1500), 200)
        } else {
            Reply::status(200)
        }
    })
    .await;
    let merchant = app.create_merchant("acme").await;
    let endpoint = app.create_endpoint("acme", &receiver.url("/hook"), &[]).await;

    let event_id = ingest_queued(&app, &merchant, r#"{"type":"a.b"}"#, 1).await;
    app.wait_for_delivery("acme", &event_id, endpoint["id"].as_str().unwrap(), "succeeded", WAIT)
        .await;
    let attempts = app.attempts("acme", &event_id).await;
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    let first = &attempts[0];
    assert_eq!(first["outcome"], "timeout", "{first}");
    assert!(first["status_code"].is_null(), "{first}");
    assert!(first["error"].as_str().is_some_and(|e| !e.is_empty()), "{first}");
    let duration = first["duration_ms"].as_u64().unwrap();
    assert!((250..1400).contains(&duration), "{first}");
    assert_eq!(attempts[1]["outcome"], "success");
    assert_eq!(app.metric(&attempts_total("timeout")).await, 1.0);
}

#[tokio::test]
async fn an_attempt_to_a_closed_port_is_classified_connect_error() {
    let app = spawn_app().await;
    let merchant = app.create_merchant("acme").await;
    app.create_endpoint("acme", &format!("http://127.0.0.1:{}/hook", closed_port()), &[])
        .await;

    let event_id = ingest_queued(&app, &merchant, r#"{"type":"a.b"}"#, 1).await;
    let attempts = wait_for_attempts(&app, "acme", &event_id, 1).await;
    let first = &attempts[0];
    assert_eq!(first["outcome"], "connect_error", "{first}");
    assert!(first["status_code"].is_null(), "{first}");
    assert!(first["error"].as_str().is_some_and(|e| !e.is_empty()), "{first}");
    assert!(app.metric(&attempts_total("connect_error")).await >= 1.0);
    assert_eq!(app.metric(&attempts_total("http_error")).await, 0.0);
}

#[tokio::test]
async fn an_endpoint_that_refuses_connections_is_probed_one_delivery_at_a_time_until_it_answers() {
    const EVENTS: usize = 30;
    let app = spawn_app_with(&[
        ("HOOKRELAY_RETRY_INITIAL_MS", "300"),
        ("HOOKRELAY_RETRY_MAX_MS", "600"),
        ("HOOKRELAY_RETRY_MAX_ATTEMPTS", "100"),
    ])
    .await;
    let merchant = app.create_merchant("acme").await;
    let healthy = Receiver::start().await;
    app.create_endpoint("acme", &healthy.url("/up"), &[]).await;
    let down_port = closed_port();
    let down = app
        .create_endpoint("acme", &format!("http://127.0.0.1:{down_port}/down"), &[])
        .await;
    let mut events = Vec::new();
    for n in 0..EVENTS {
        let body = format!(r#"{{"type":"a.b","n":{n}}}"#);
        events.push(ingest_queued(&app, &merchant, &body, 2).await);
    }

    // Attempting every due delivery would make at least one attempt per delivery and,
    // at 300 ms doubling to 600 ms, about five each in 3 s: some 150. Probing makes
    // the misses that tell the endpoint is down (the four before the fifth, and at
    // most the endpoint's concurrency of 16 under way when it came back), then one
    // every 300 ms or more.
    let down_for = Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let misses = app.metric(&attempts_total("connect_error")).await;
    let bound = 4.0 + 16.0 + (down_for.elapsed().as_millis() / 300) as f64 + 3.0;
    assert!(
        (5.0..=bound).contains(&misses),
        "{misses} attempts to the closed port in {:?} (at most {bound} expected)",
        down_for.elapsed()
    );
    assert_eq!(app.metric(UNREACHABLE).await, 1.0);
    assert_eq!(healthy.received().len(), EVENTS, "the other endpoint never waited");
    assert_eq!(app.metric("hookrelay_queue_depth").await, EVENTS as f64);

    // It comes back on the same port: every delivery goes out once a probe is answered.
    let back = Receiver::start_on(down_port).await;
    let back_at = Instant::now();
    for event_id in &events {
        app.wait_for_deliveries("acme", event_id, "succeeded", WAIT).await;
    }
    assert!(
        back_at.elapsed() < Duration::from_secs(3),
        "took {:?}",
        back_at.elapsed()
    );
    assert_eq!(back.received().len(), EVENTS);
    assert_eq!(app.metric(UNREACHABLE).await, 0.0);
    // Deliveries that waited were not attempted meanwhile: counts stayed as they were.
    let attempts_to_down: f64 = {
        let mut total = 0;
        for event_id in &events {
            let event = app.event("acme", event_id).await;
            let delivery = event["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["endpoint_id"] == down["id"])
                .expect("a delivery to the endpoint that was down")
                .clone();
            total += delivery["attempts"].as_u64().unwrap();
        }
        total as f64
    };
    let all_misses = app.metric(&attempts_total("connect_error")).await;
    assert_eq!(
        attempts_to_down,
        all_misses + EVENTS as f64,
        "one success each, besides the misses"
    );
}

#[tokio::test]
async fn an_unreachable_endpoint_given_a_new_url_gets_everything_due_and_a_deleted_one_is_forgotten() {
    let app = spawn_app_with(&[
        ("HOOKRELAY_RETRY_INITIAL_MS", "2000"),
        ("HOOKRELAY_RETRY_MAX_MS", "4000"),
        ("HOOKRELAY_RETRY_MAX_ATTEMPTS", "100"),
    ])
    .await;
    let merchant = app.create_merchant("acme").await;
    let moved = app
        .create_endpoint("acme", &format!("http://127.0.0.1:{}/old", closed_port()), &[])
        .await;
    let mut events = Vec::new();
    for n in 0..30 {
        let body = format!(r#"{{"type":"a.b","n":{n}}}"#);
        events.push(ingest_queued(&app, &merchant, &body, 1).await);
    }
    wait_for_metric(&app, UNREACHABLE, |v| v == 1.0).await;
    // At most 4 + 16 were tried (and wait for their 2 s retry); the rest are due.
    let untried = events.len() - app.metric(&attempts_total("connect_error")).await as usize;
    assert!(untried >= 10, "{untried} deliveries left untried");

    // A new URL is a new endpoint as far as reachability goes: everything due goes
    // there now, not one delivery per 2 s probe gap.
    let receiver = Receiver::start().await;
    let path = format!("/api/v1/merchants/acme/endpoints/{}", moved["id"].as_str().unwrap());
    let (status, body) = app
        .admin(
            reqwest::Method::PATCH,
            &path,
            Some(json!({ "url": receiver.url("/new") })),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let patched_at = Instant::now();
    while receiver.received().len() < untried {
        assert!(
            patched_at.elapsed() < Duration::from_secs(1),
            "{} of the {untried} due deliveries arrived in 1 s: they waited for probes",
            receiver.received().len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for event_id in &events {
        app.wait_for_deliveries("acme", event_id, "succeeded", WAIT).await;
    }
    assert_eq!(receiver.received().len(), events.len());
    wait_for_metric(&app, UNREACHABLE, |v| v == 0.0).await;

    // An endpoint deleted while unreachable leaves the gauge.
    let dead = app
        .create_endpoint("acme", &format!("http://127.0.0.1:{}/dead", closed_port()), &[])
        .await;
    for n in 0..6 {
        let body = format!(r#"{{"type":"a.b","m":{n}}}"#);
        ingest_queued(&app, &merchant, &body, 2).await;
    }
    wait_for_metric(&app, UNREACHABLE, |v| v == 1.0).await;
    let path = format!("/api/v1/merchants/acme/endpoints/{}", dead["id"].as_str().unwrap());
    let (status, body) = app.admin(reqwest::Method::DELETE, &path, None).await;
    assert!(status == 204 || status == 200, "{status} {body}");
    wait_for_metric(&app, UNREACHABLE, |v| v == 0.0).await;
}

#[tokio::test]
async fn a_redirect_is_an_http_error_and_is_not_followed() {
    let app = spawn_app().await;
    let elsewhere = Receiver::start().await;
    let location = elsewhere.url("/elsewhere");
    let receiver = Receiver::answering_with_headers(move |n| match n {
        0 => (302, vec![("location", location.clone())]),
        _ => (200, vec![]),
    })
    .await;
    let merchant = app.create_merchant("acme").await;
    let endpoint = app.create_endpoint("acme", &receiver.url("/hook"), &[]).await;

    let event_id = ingest_queued(&app, &merchant, r#"{"type":"a.b"}"#, 1).await;
    app.wait_for_delivery("acme", &event_id, endpoint["id"].as_str().unwrap(), "succeeded", WAIT)
        .await;
    let attempts = app.attempts("acme", &event_id).await;
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(
        (&attempts[0]["outcome"], &attempts[0]["status_code"]),
        (&json!("http_error"), &json!(302)),
        "{attempts:#?}"
    );
    assert_eq!(receiver.received().len(), 2);
    assert!(elsewhere.received().is_empty(), "the redirect was followed");
}

#[tokio::test]
async fn retry_after_on_429_and_503_delays_the_next_attempt() {
    // A cap well above the asked delay, so Retry-After is honoured in full.
    let app = spawn_app_with(&[("HOOKRELAY_RETRY_MAX_MS", "5000")]).await;
    let merchant = app.create_merchant("acme").await;
    // (status, Retry-After, shortest and longest gap between the two attempts)
    let cases = [
        (429, Some("1"), Duration::from_millis(980), Duration::from_millis(2500)),
        (503, Some("1"), Duration::from_millis(980), Duration::from_millis(2500)),
        (429, None, Duration::ZERO, Duration::from_millis(800)),
    ];
    let mut running = Vec::new();
    for (status, retry_after, shortest, longest) in cases {
        let receiver = Receiver::answering_with_headers(move |n| match (n, retry_after) {
            (0, Some(seconds)) => (status, vec![("retry-after", seconds.to_owned())]),
            (0, None) => (status, vec![]),
            _ => (200, vec![]),
        })
        .await;
        app.create_endpoint("acme", &receiver.url("/hook"), &[]).await;
        running.push((status, retry_after, shortest, longest, receiver));
    }

    ingest_queued(&app, &merchant, r#"{"type":"a.b"}"#, 3).await;
    for (status, retry_after, shortest, longest, receiver) in running {
        let got = receiver.wait_for(2, WAIT).await;
        let gap = got[1].at.duration_since(got[0].at);
        assert!(
            shortest <= gap && gap <= longest,
            "{status} with Retry-After {retry_after:?}: the retry came after {gap:?}, expected {shortest:?}..{longest:?}"
        );
    }
}

#[tokio::test]
async fn state_survives_a_restart_and_a_delivery_still_retrying_is_delivered_after_it() {
    // Attempts enough that the delivery is still pending when the first app stops.
    let app = spawn_app_with(&[("HOOKRELAY_RETRY_MAX_ATTEMPTS", "100")]).await;
    let receiver = Receiver::answering(|_| Reply::status(500)).await;
    let merchant = app.create_merchant("acme").await;
    let endpoint = app.create_endpoint("acme", &receiver.url("/hook"), &["a.*"]).await;
    let endpoint_id = endpoint["id"].as_str().unwrap().to_owned();
    let event_id = ingest_queued(&app, &merchant, r#"{"id":"p1","type":"a.b"}"#, 1).await;
    receiver.wait_for(2, WAIT).await;

    let app = app.restart().await;
    let before_restart = receiver.received().len();
    receiver.answer_with(|_| Reply::status(200));

    let (status, body) = app.get("/api/v1/merchants/acme").await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = app
        .get(&format!("/api/v1/merchants/acme/endpoints/{endpoint_id}"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event_types"], json!(["a.*"]), "{body}");
    assert_eq!(app.revealed_secret("acme", &endpoint_id).await, endpoint["secret"]);
    let event = app.event("acme", &event_id).await;
    assert_eq!(event["payload"], json!({ "id": "p1", "type": "a.b" }), "{event:#}");

    let delivery = app
        .wait_for_delivery("acme", &event_id, &endpoint_id, "succeeded", WAIT)
        .await;
    let got = receiver.wait_for(before_restart + 1, WAIT).await;
    assert!(got.iter().all(|r| r.header("webhook-id") == event_id));
    assert_eq!(
        delivery["attempts"].as_u64().unwrap() as usize,
        got.len(),
        "attempts counted across the restart: {delivery}"
    );

    // The merchant's ingest token still works, and the same provider id is still a duplicate.
    let token = merchant["ingest_token"].as_str().unwrap();
    let ingest = |body: &'static str| {
        app.http
            .post(app.url(&format!("/ingest/acme?token={token}")))
            .body(body)
            .send()
    };
    let response = ingest(r#"{"id":"p1","type":"a.b"}"#).await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(
        (&answer["status"], &answer["event_id"]),
        (&json!("duplicate"), &json!(event_id)),
        "{answer}"
    );
    let response = ingest(r#"{"id":"p2","type":"a.c"}"#).await.unwrap();
    assert_eq!(response.status().as_u16(), 202);
    receiver.wait_for(got.len() + 1, WAIT).await;
}

/// A receiver that answers the first request on each connection and closes the
/// connection, unanswered, when a second request arrives on it: what a server does when
/// its keep-alive timer (5 s in Node.js and uvicorn, 2 s in gunicorn) fires just as a
/// client reuses the connection. Returns its URL and the count of requests it read.
async fn receiver_closing_reused_connections() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let requests = std::sync::Arc::new(AtomicUsize::new(0));
    let count = requests.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                for served in 0.. {
                    // Read one request: headers, then Content-Length bytes of body.
                    let (head_end, body_len) = loop {
                        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                            let len = head
                                .lines()
                                .find_map(|line| line.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse::<usize>().ok())
                                .unwrap_or(0);
                            break (end + 4, len);
                        }
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    };
                    while buffer.len() < head_end + body_len {
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buffer.drain(..head_end + body_len);
                    count.fetch_add(1, Ordering::SeqCst);
                    if served > 0 {
                        return; // closes the reused connection without an answer
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    if socket.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, requests)
}

#[tokio::test]
async fn a_connection_the_receiver_closed_as_it_was_reused_is_not_a_failed_attempt() {
    let app = spawn_app().await;
    let (url, requests) = receiver_closing_reused_connections().await;
    let merchant = app.create_merchant("acme").await;
    let endpoint = app.create_endpoint("acme", &url, &[]).await;
    let endpoint_id = endpoint["id"].as_str().unwrap();

    let first = ingest_queued(&app, &merchant, r#"{"type":"a.b"}"#, 1).await;
    app.wait_for_delivery("acme", &first, endpoint_id, "succeeded", WAIT)
        .await;
    // The next delivery goes out on the pooled connection, which the receiver closes.
    let second = ingest_queued(&app, &merchant, r#"{"type":"a.b"}"#, 1).await;
    app.wait_for_delivery("acme", &second, endpoint_id, "succeeded", WAIT)
        .await;

    let attempts = app.attempts("acme", &second).await;
    assert_eq!(
        attempts.len(),
        1,
        "one attempt, not a failure and a retry: {attempts:#?}"
    );
    assert_eq!(attempts[0]["outcome"], "success", "{attempts:#?}");
    // Sent on the old connection (closed unanswered), then once more on a new one.
    assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(app.metric(&attempts_total("connect_error")).await, 0.0);
}
