//! Egress policy through the HTTP interface: endpoint URLs refused at registration,
//! deliveries refused after DNS resolution, allow and deny lists, https-only, proxy.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use hookrelay::config::Settings;
use serde_json::{json, Value};

use crate::helpers::{assert_error, spawn_app, spawn_app_with, Receiver, TestApp};

const EVENT: &str = r#"{"type":"checkout_session.completed","data":{}}"#;

async fn register(app: &TestApp, merchant: &str, url: &str) -> (u16, Value) {
    app.post(
        &format!("/api/v1/merchants/{merchant}/endpoints"),
        json!({ "url": url }),
    )
    .await
}

/// Polls until the event has at least one attempt per endpoint, and returns them.
async fn wait_for_attempts(app: &TestApp, merchant: &str, event_id: &str, endpoints: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let attempts = app.attempts(merchant, event_id).await;
        let seen: BTreeSet<String> = attempts.iter().map(|a| a["endpoint_id"].to_string()).collect();
        if seen.len() >= endpoints {
            return attempts;
        }
        assert!(
            Instant::now() < deadline,
            "only {} endpoints were attempted: {attempts:#?}",
            seen.len()
        );
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
}

/// The merchant's ingest URL on this (possibly restarted, so re-ported) gateway.
fn ingest_target(app: &TestApp, merchant: &Value) -> Value {
    let (id, token) = (
        merchant["id"].as_str().unwrap(),
        merchant["ingest_token"].as_str().unwrap(),
    );
    json!({ "ingest_url": format!("{}/ingest/{id}?token={token}", app.address) })
}

fn assert_refused_by_policy(attempt: &Value) {
    assert_eq!(attempt["outcome"], "connect_error", "{attempt:#}");
    let error = attempt["error"].as_str().unwrap_or("");
    assert!(error.contains("egress policy refused"), "{attempt:#}");
}

#[tokio::test]
async fn link_local_metadata_and_unspecified_addresses_are_refused_at_registration_in_every_spelling() {
    let app = spawn_app().await;
    app.create_merchant("acme").await;
    let refused = [
        "http://169.254.169.254/latest/meta-data",
        "http://[fe80::1]/",
        "http://[::ffff:169.254.169.254]/",
        "http://[::ffff:a9fe:a9fe]/latest",
        "http://2852039166/",
        "http://0xa9fea9fe/",
        "http://169.254.169.254./",
        "http://0.0.0.0:8080/",
        "http://0/",
        "http://[::]/",
        "http://[64:ff9b::a9fe:a9fe]/",
        "http://[fd00:ec2::254]/latest/meta-data",
    ];
    for url in refused {
        let (status, body) = register(&app, "acme", url).await;
        assert_error(status, &body, 422, "url_not_allowed", url);
        assert!(
            body["error"]["message"].as_str().unwrap().contains("egress policy"),
            "{url}: {body}"
        );
    }
    let (status, body) = app.get("/api/v1/merchants/acme/endpoints").await;
    assert_eq!(status, 200);
    assert_eq!(body["data"], json!([]), "nothing was registered");
    assert_eq!(
        app.metric("hookrelay_egress_refused_total{stage=\"registration\"}")
            .await,
        refused.len() as f64
    );
}

#[tokio::test]
async fn private_loopback_and_localhost_targets_are_allowed_by_default() {
    let app = spawn_app_with(&[("HOOKRELAY_MAX_ENDPOINTS_PER_MERCHANT", "20")]).await;
    app.create_merchant("acme").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://[::1]:9/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10:8080/hook",
        "http://172.16.5.5/hook",
        "https://hooks.example.invalid/hook",
    ] {
        let (status, body) = register(&app, "acme", url).await;
        assert_eq!(status, 201, "{url}: {body}");
    }
}

#[tokio::test]
async fn changing_an_endpoint_url_to_a_refused_address_is_refused_and_keeps_the_old_url() {
    let app = spawn_app().await;
    app.create_merchant("acme").await;
    let endpoint = app.create_endpoint("acme", "http://127.0.0.1:9/hook", &[]).await;
    let path = format!("/api/v1/merchants/acme/endpoints/{}", endpoint["id"].as_str().unwrap());
    for url in [
        "http://169.254.169.254/",
        "http://[fe80::1]/",
        "http://[::ffff:169.254.169.254]/",
    ] {
        let (status, body) = app
            .admin(reqwest::Method::PATCH, &path, Some(json!({ "url": url })))
            .await;
        assert_error(status, &body, 422, "url_not_allowed", url);
    }
    let (_, body) = app.get(&path).await;
    assert_eq!(body["url"], "http://127.0.0.1:9/hook");
}

#[tokio::test]
async fn a_deny_list_refuses_loopback_receivers_by_address_and_by_a_name_that_resolves_there() {
    let app = spawn_app_with(&[("HOOKRELAY_EGRESS_DENY", "127.0.0.0/8,::1,.blocked.example")]).await;
    app.create_merchant("acme").await;
    let receiver = Receiver::start().await;
    for url in [
        receiver.url("/hook"),
        format!("http://[::ffff:127.0.0.1]:{}/hook", receiver.port),
        format!("http://localhost:{}/hook", receiver.port),
        "https://api.blocked.example/hook".to_owned(),
    ] {
        let (status, body) = register(&app, "acme", &url).await;
        assert_error(status, &body, 422, "url_not_allowed", &url);
    }
    let (status, body) = register(&app, "acme", "http://10.0.0.1/hook").await;
    assert_eq!(status, 201, "{body}");
}

#[tokio::test]
async fn an_endpoint_registered_before_a_deny_list_came_into_force_gets_no_delivery() {
    let app = spawn_app().await;
    let merchant = app.create_merchant("acme").await;
    let receiver = Receiver::start().await;
    // One by IP literal (checked before sending), one by name (checked by the resolver).
    let by_ip = app.create_endpoint("acme", &receiver.url("/ip"), &[]).await;
    let by_name = app
        .create_endpoint("acme", &format!("http://localhost:{}/name", receiver.port), &[])
        .await;

    let app = app
        .restart_with(&[
            ("HOOKRELAY_EGRESS_DENY", "127.0.0.0/8,::1"),
            ("HOOKRELAY_RETRY_INITIAL_MS", "60000"),
            ("HOOKRELAY_RETRY_MAX_MS", "60000"),
        ])
        .await;
    let (status, body) = app.ingest(&ingest_target(&app, &merchant), EVENT).await;
    assert_eq!(status, 202, "{body}");
    let event_id = body["event_id"].as_str().unwrap();
    let attempts = wait_for_attempts(&app, "acme", event_id, 2).await;
    for endpoint in [&by_ip, &by_name] {
        let attempt = attempts
            .iter()
            .find(|a| a["endpoint_id"] == endpoint["id"])
            .expect("an attempt for each endpoint");
        assert_refused_by_policy(attempt);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        receiver.received().is_empty(),
        "the receiver got {:?}",
        receiver.received()
    );
    assert!(app.metric("hookrelay_egress_refused_total{stage=\"delivery\"}").await >= 2.0);
}

#[tokio::test]
async fn https_only_refuses_http_urls_at_registration_and_at_delivery() {
    let app = spawn_app().await;
    let merchant = app.create_merchant("acme").await;
    let receiver = Receiver::start().await;
    app.create_endpoint("acme", &receiver.url("/hook"), &[]).await;

    let app = app
        .restart_with(&[
            ("HOOKRELAY_EGRESS_HTTPS_ONLY", "true"),
            ("HOOKRELAY_RETRY_INITIAL_MS", "60000"),
            ("HOOKRELAY_RETRY_MAX_MS", "60000"),
        ])
        .await;
    let (status, body) = register(&app, "acme", "http://10.0.0.1/hook").await;
    assert_error(status, &body, 422, "url_not_allowed", "http under https-only");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HOOKRELAY_EGRESS_HTTPS_ONLY"),
        "{body}"
    );
    app.create_merchant("other").await;
    let (status, body) = register(&app, "other", "https://10.0.0.1/hook").await;
    assert_eq!(status, 201, "{body}");

    let (status, body) = app.ingest(&ingest_target(&app, &merchant), EVENT).await;
    assert_eq!(status, 202, "{body}");
    let event_id = body["event_id"].as_str().unwrap();
    let attempts = wait_for_attempts(&app, "acme", event_id, 1).await;
    assert_refused_by_policy(&attempts[0]);
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("HOOKRELAY_EGRESS_HTTPS_ONLY"),
        "{attempts:#?}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn an_allow_list_admits_only_listed_targets_and_never_metadata_addresses() {
    let app = spawn_app_with(&[
        (
            "HOOKRELAY_EGRESS_ALLOW",
            "localhost, 10.0.0.0/8, 169.254.0.0/16, .partner.example",
        ),
        ("HOOKRELAY_MAX_ENDPOINTS_PER_MERCHANT", "20"),
    ])
    .await;
    let merchant = app.create_merchant("acme").await;
    let receiver = Receiver::start().await;
    let cases = [
        (format!("http://localhost:{}/hook", receiver.port), 201),
        ("http://10.2.3.4/hook".to_owned(), 201),
        ("https://hooks.partner.example/hook".to_owned(), 201),
        ("https://partner.example/hook".to_owned(), 201),
        (receiver.url("/hook"), 422),
        ("http://192.168.1.1/hook".to_owned(), 422),
        ("http://169.254.169.254/latest/meta-data".to_owned(), 422),
        ("https://unlisted.example.invalid/hook".to_owned(), 422),
        ("https://partner.example.evil.invalid/hook".to_owned(), 422),
    ];
    for (url, expected) in &cases {
        let (status, body) = register(&app, "acme", url).await;
        assert_eq!(status, *expected, "{url}: {body}");
        if *expected == 422 {
            assert_eq!(body["error"]["code"], "url_not_allowed", "{url}: {body}");
        }
    }
    // The allowed name resolves through the policy resolver and gets its delivery.
    let (status, body) = app.ingest(&ingest_target(&app, &merchant), EVENT).await;
    assert_eq!(status, 202, "{body}");
    let received = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(received[0].path, "/hook");
}

#[tokio::test]
async fn deliveries_go_through_the_configured_proxy_and_the_policy_still_applies_to_the_target() {
    let proxy = Receiver::start().await;
    let proxy_url = proxy.url("");
    let app = spawn_app_with(&[("HOOKRELAY_EGRESS_PROXY", proxy_url.as_str())]).await;
    let merchant = app.create_merchant("acme").await;
    // A name only the proxy would resolve; registration accepts names that do not resolve.
    app.create_endpoint("acme", "http://hooks.internal.invalid/relay", &[])
        .await;
    app.create_endpoint("acme", "http://10.9.9.9/relay", &[]).await;
    let (status, _) = app.ingest(&ingest_target(&app, &merchant), EVENT).await;
    assert_eq!(status, 202);
    let received = proxy.wait_for(2, Duration::from_secs(5)).await;
    let mut targets: Vec<&str> = received.iter().map(|r| r.path.as_str()).collect();
    targets.sort();
    assert_eq!(
        targets,
        ["http://10.9.9.9/relay", "http://hooks.internal.invalid/relay"]
    );

    let app = app
        .restart_with(&[
            ("HOOKRELAY_EGRESS_PROXY", proxy_url.as_str()),
            ("HOOKRELAY_EGRESS_DENY", ".internal.invalid, 10.9.0.0/16"),
            ("HOOKRELAY_RETRY_INITIAL_MS", "60000"),
            ("HOOKRELAY_RETRY_MAX_MS", "60000"),
        ])
        .await;
    let (status, body) = app.ingest(&ingest_target(&app, &merchant), EVENT).await;
    assert_eq!(status, 202);
    let attempts = wait_for_attempts(&app, "acme", body["event_id"].as_str().unwrap(), 2).await;
    for attempt in &attempts {
        assert_refused_by_policy(attempt);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(proxy.received().len(), 2, "nothing more reached the proxy");
}

#[test]
fn malformed_egress_settings_stop_start_up_naming_the_setting() {
    let cases = [
        ("HOOKRELAY_EGRESS_ALLOW", "10.0.0.0/33"),
        ("HOOKRELAY_EGRESS_ALLOW", ","),
        ("HOOKRELAY_EGRESS_DENY", "*.example.com"),
        ("HOOKRELAY_EGRESS_DENY", "http://example.com"),
        ("HOOKRELAY_EGRESS_HTTPS_ONLY", "yes"),
        ("HOOKRELAY_EGRESS_PROXY", "socks5://proxy:1080"),
        ("HOOKRELAY_EGRESS_PROXY", "proxy:3128"),
    ];
    for (name, value) in cases {
        let env = BTreeMap::from([(name.to_owned(), value.to_owned())]);
        let error = Settings::from_sources(None, &env).expect_err(value).to_string();
        assert!(error.contains(name), "{name}={value}: {error}");
    }
    let env = BTreeMap::from([
        (
            "HOOKRELAY_EGRESS_ALLOW".to_owned(),
            "10.0.0.0/8, .example.com".to_owned(),
        ),
        ("HOOKRELAY_EGRESS_DENY".to_owned(), "10.66.0.0/16".to_owned()),
        ("HOOKRELAY_EGRESS_HTTPS_ONLY".to_owned(), "true".to_owned()),
        (
            "HOOKRELAY_EGRESS_PROXY".to_owned(),
            "http://proxy.internal:3128".to_owned(),
        ),
    ]);
    let settings = Settings::from_sources(None, &env).unwrap();
    assert!(settings.egress.https_only());
    assert!(!settings.egress.allows("10.66.1.1".parse().unwrap()));
    assert!(
        !format!("{settings:?}").contains("proxy.internal"),
        "the proxy URL may hold credentials"
    );
}
