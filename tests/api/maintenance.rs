//! Retention, disk watermark, slow bodies and data-directory checks.

use std::io::{Read as _, Write as _};
use std::time::{Duration, Instant};

use hookrelay::config::Settings;
use hookrelay::startup::Application;
use tokio_util::sync::CancellationToken;

use crate::helpers::{spawn_app_with, Receiver, Reply};

#[tokio::test]
async fn finished_events_are_purged_after_the_retention_and_pending_ones_are_kept() {
    // 0.0005 h = 1.8 s; the purge runs every 200 ms.
    let app = spawn_app_with(&[
        ("HOOKRELAY_RETENTION_HOURS", "0.0005"),
        ("HOOKRELAY_PURGE_INTERVAL_MS", "200"),
        ("HOOKRELAY_RETRY_MAX_ATTEMPTS", "1000"),
    ])
    .await;
    let ok = Receiver::start().await;
    let down = Receiver::answering(|_| Reply::status(503)).await;
    let merchant = app.create_merchant("acme").await;
    app.create_endpoint("acme", &ok.url("/ok"), &["delivered"]).await;
    app.create_endpoint("acme", &down.url("/down"), &["stuck"]).await;
    let (_, delivered) = app.ingest(&merchant, r#"{"id":"p-1","type":"delivered"}"#).await;
    let (_, stuck) = app.ingest(&merchant, r#"{"id":"p-2","type":"stuck"}"#).await;
    let delivered = delivered["event_id"].as_str().unwrap().to_owned();
    let stuck = stuck["event_id"].as_str().unwrap().to_owned();
    app.wait_for_deliveries("acme", &delivered, "succeeded", Duration::from_secs(5))
        .await;

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _) = app.get(&format!("/api/v1/merchants/acme/events/{delivered}")).await;
        if status == 404 {
            break;
        }
        assert!(Instant::now() < deadline, "the delivered event was never purged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(app.metric("hookrelay_events_purged_total").await >= 1.0);
    // The dedupe key went with it: the provider's id is new again.
    let (status, body) = app.ingest(&merchant, r#"{"id":"p-1","type":"delivered"}"#).await;
    assert_eq!(status, 202, "{body}");
    // The event still retrying is kept, however old.
    let (status, _) = app.get(&format!("/api/v1/merchants/acme/events/{stuck}")).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn below_the_free_space_watermark_ingest_is_503_and_stores_nothing() {
    let app = spawn_app_with(&[("HOOKRELAY_MIN_FREE_DISK_BYTES", &u64::MAX.to_string())]).await;
    let merchant = app.create_merchant("acme").await;
    let (status, body) = app.ingest(&merchant, r#"{"id":"x","type":"a"}"#).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "insufficient_storage");
    let (status, events) = app.get("/api/v1/merchants/acme/events").await;
    assert_eq!(status, 200, "reads keep working");
    assert_eq!(events["data"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn a_body_that_trickles_in_slower_than_the_read_timeout_is_cut_off_with_408() {
    let app = spawn_app_with(&[("HOOKRELAY_INGEST_READ_TIMEOUT_MS", "500")]).await;
    let merchant = app.create_merchant("acme").await;
    let token = merchant["ingest_token"].as_str().unwrap().to_owned();
    let port = app.port;
    let started = Instant::now();
    let answer = tokio::task::spawn_blocking(move || {
        let mut socket = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let head = format!(
            "POST /ingest/acme?token={token} HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\ncontent-type: application/json\r\n\r\n{{"
        );
        socket.write_all(head.as_bytes()).unwrap();
        socket.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut answer = vec![0u8; 4096];
        let n = socket.read(&mut answer).unwrap_or(0);
        String::from_utf8_lossy(&answer[..n]).into_owned()
    })
    .await
    .unwrap();
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3));
    let (_, events) = app.get("/api/v1/merchants/acme/events").await;
    assert_eq!(events["data"].as_array().unwrap().len(), 0);
}

fn settings_on(dir: &std::path::Path) -> Settings {
    let env = [
        ("HOOKRELAY_LISTEN", "127.0.0.1:0".to_owned()),
        ("HOOKRELAY_DATA_DIR", dir.display().to_string()),
        ("HOOKRELAY_ADMIN_TOKEN", "test-admin-token-0123456789".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Settings::from_sources(None, &env).unwrap()
}

#[tokio::test]
async fn a_data_directory_that_is_not_ours_or_of_another_format_is_refused() {
    let foreign = tempfile::tempdir().unwrap();
    std::fs::write(foreign.path().join("photos.db"), b"not hookrelay").unwrap();
    let error = Application::build(settings_on(foreign.path()), CancellationToken::new())
        .await
        .err()
        .unwrap();
    let message = format!("{error:#}");
    assert!(message.contains("not a hookrelay data directory"), "{message}");
    assert!(
        std::fs::read_dir(foreign.path()).unwrap().count() == 1,
        "nothing was written into it"
    );

    let other_version = tempfile::tempdir().unwrap();
    std::fs::write(other_version.path().join("FORMAT"), b"hookrelay-sled 99\n").unwrap();
    let error = Application::build(settings_on(other_version.path()), CancellationToken::new())
        .await
        .err()
        .unwrap();
    let message = format!("{error:#}");
    assert!(message.contains("hookrelay-sled 99"), "{message}");
}

#[tokio::test]
async fn a_store_whose_log_was_cut_short_or_emptied_is_refused_not_opened_with_events_missing() {
    let mut app = crate::helpers::spawn_app().await;
    let merchant = app.create_merchant("acme").await;
    for i in 0..30 {
        let (status, _) = app.ingest(&merchant, &format!(r#"{{"id":"e{i}","type":"t"}}"#)).await;
        assert_eq!(status, 202);
    }
    app.stop().await;
    let dir = app.data_dir.path().to_owned();
    let log = dir.join("db");
    let len = std::fs::metadata(&log).unwrap().len();
    assert!(dir.join("LOGSIZE").exists(), "a clean stop records the log length");

    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let error = Application::build(settings_on(&dir), CancellationToken::new())
        .await
        .err()
        .unwrap();
    assert!(format!("{error:#}").contains("truncated"), "{error:#}");

    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    let error = Application::build(settings_on(&dir), CancellationToken::new())
        .await
        .err()
        .unwrap();
    assert!(format!("{error:#}").contains("is empty"), "{error:#}");
}

/// Records as the first layout (`hookrelay-sled 1`) wrote them: JSON records, a delivery
/// record per endpoint, queue entries holding only the merchant id.
#[tokio::test]
async fn a_data_directory_of_the_first_layout_is_upgraded_and_its_queued_delivery_is_sent() {
    let receiver = Receiver::answering(|_| Reply::status(200)).await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("FORMAT"), "hookrelay-sled 1\n").unwrap();
    let token = "whk_layout-one-token-0123456789abcdefghijklmnopq";
    let (endpoint, event) = (
        "ep_0190a1b2c3d4e5f60718293a4b5c6d7e",
        "evt_0190a1b2c3d4e5f60718293a4b5c6d7f",
    );
    let received_at = 1_764_000_000_000_i64;
    let body = br#"{"id":"evt_provider_1","type":"checkout_session.completed"}"#;
    {
        let db = sled::open(dir.path()).unwrap();
        let tree = |name: &str| db.open_tree(name).unwrap();
        let record = |value: serde_json::Value| serde_json::to_vec(&value).unwrap();
        tree("merchants")
            .insert(
                "old",
                record(serde_json::json!({ "id": "old", "name": null, "ingest_token": token, "created_at": 1 })),
            )
            .unwrap();
        let endpoint_record = serde_json::json!({
            "id": endpoint, "merchant_id": "old", "url": receiver.url("/hook"), "event_types": [],
            "description": null, "secret": "whsec_CQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJ", "retired_secrets": [],
            "enabled": true, "created_at": 1, "updated_at": 1,
        });
        tree("endpoints")
            .insert([&b"old\0"[..], endpoint.as_bytes()].concat(), record(endpoint_record))
            .unwrap();
        let event_record = serde_json::json!({
            "id": event, "merchant_id": "old", "event_type": "checkout_session.completed",
            "idempotency_key": "evt_provider_1", "received_at": received_at,
        });
        tree("events")
            .insert([&b"old\0"[..], event.as_bytes()].concat(), record(event_record))
            .unwrap();
        tree("payloads").insert(event, &body[..]).unwrap();
        tree("dedupe").insert("old\0evt_provider_1", event).unwrap();
        let delivery = serde_json::json!({
            "event_id": event, "endpoint_id": endpoint, "merchant_id": "old", "status": "pending",
            "attempts": 0, "next_attempt_at": received_at, "last_attempt_at": null, "last_status_code": null,
            "last_error": null, "created_at": received_at, "updated_at": received_at,
        });
        tree("deliveries")
            .insert([event, endpoint].concat(), record(delivery))
            .unwrap();
        let queue_key = [
            endpoint.as_bytes(),
            &(received_at as u64).to_be_bytes(),
            event.as_bytes(),
        ]
        .concat();
        tree("queue").insert(queue_key, "old").unwrap();
        db.flush().unwrap();
    }

    let stop = CancellationToken::new();
    let app = Application::build(settings_on(dir.path()), stop.clone())
        .await
        .expect("a data directory of the first layout opens");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("FORMAT")).unwrap(),
        "hookrelay-sled 6\n",
        "marked as the new layout, which older builds refuse"
    );
    let port = app.port();
    let task = tokio::spawn(app.run_until_stopped());

    let got = receiver.wait_for(1, Duration::from_secs(10)).await;
    assert_eq!(got[0].header("webhook-id"), event);
    assert_eq!(got[0].body, body);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let admin = |path: String| {
        let request = http
            .get(format!("http://127.0.0.1:{port}{path}"))
            .bearer_auth("test-admin-token-0123456789");
        async move { request.send().await.unwrap().json::<serde_json::Value>().await.unwrap() }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    let shown = loop {
        let shown = admin(format!("/api/v1/merchants/old/events/{event}")).await;
        if shown["deliveries"][0]["status"] == "succeeded" || Instant::now() > deadline {
            break shown;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(shown["deliveries"][0]["status"], "succeeded", "{shown:#}");
    assert_eq!(shown["deliveries"][0]["attempts"], 1, "{shown:#}");

    // The old idempotency key still deduplicates; a new event is stored in the new layout beside the old.
    let ingest = |body: &'static str| {
        http.post(format!("http://127.0.0.1:{port}/ingest/old?token={token}"))
            .body(body)
            .send()
    };
    let duplicate: serde_json::Value = ingest(r#"{"id":"evt_provider_1"}"#)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(duplicate["event_id"], event, "{duplicate}");
    let fresh = ingest(r#"{"id":"evt_provider_2"}"#).await.unwrap();
    assert_eq!(fresh.status().as_u16(), 202);
    receiver.wait_for(2, Duration::from_secs(10)).await;
    stop.cancel();
    task.await.unwrap().unwrap();
}
