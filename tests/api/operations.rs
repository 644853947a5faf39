//! What operators and their tools call: health, readiness, Prometheus metrics, the
//! OpenAPI document, and the answer to an unknown route.

use std::collections::BTreeSet;
use std::time::Duration;

use reqwest::Method;

use crate::helpers::{
    assert_error, closed_port, spawn_app, spawn_app_with, wait_for_metric, Receiver, Reply, TestApp, ADMIN_TOKEN,
};

/// `(name, type, labels)` of every metric SPEC.md lists.
const SPEC_METRICS: [(&str, &str, &[&str]); 7] = [
    (
        "hookrelay_events_ingested_total",
        "counter",
        &["accepted", "duplicate", "rejected"],
    ),
    (
        "hookrelay_delivery_attempts_total",
        "counter",
        &["success", "http_error", "timeout", "connect_error"],
    ),
    ("hookrelay_deliveries_failed_total", "counter", &[]),
    ("hookrelay_delivery_duration_seconds", "histogram", &[]),
    ("hookrelay_delivery_lag_seconds", "histogram", &[]),
    ("hookrelay_queue_depth", "gauge", &[]),
    ("hookrelay_deliveries_in_flight", "gauge", &[]),
];

/// `GET /metrics` without any credentials: status, content type, text.
async fn scrape(app: &TestApp) -> (u16, String, String) {
    let response = app.http.get(app.url("/metrics")).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, content_type.unwrap_or_default(), response.text().await.unwrap())
}

#[tokio::test]
async fn healthz_and_readyz_answer_200_while_the_gateway_runs() {
    let app = spawn_app().await;
    for path in ["/healthz", "/readyz"] {
        let response = app.http.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status().as_u16(), 200, "{path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{path}"
        );
    }
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_every_metric_of_the_spec_and_no_auth() {
    let app = spawn_app().await;
    let (status, content_type, text) = scrape(&app).await;
    assert_eq!(status, 200, "{text}");
    assert!(content_type.starts_with("text/plain"), "content type {content_type}");
    assert!(content_type.contains("version=0.0.4"), "content type {content_type}");
    for (name, kind, labels) in SPEC_METRICS {
        assert!(
            text.contains(&format!("\n# TYPE {name} {kind}\n")),
            "no `# TYPE {name} {kind}` in:\n{text}"
        );
        assert!(text.contains(&format!("# HELP {name} ")), "no help for {name}");
        match kind {
            "histogram" => {
                for suffix in ["_bucket{le=\"+Inf\"} ", "_sum ", "_count "] {
                    assert!(
                        text.contains(&format!("\n{name}{suffix}")),
                        "no {name}{suffix} in:\n{text}"
                    );
                }
            }
            _ if labels.is_empty() => assert!(text.contains(&format!("\n{name} ")), "no {name} series"),
            _ => {}
        }
        for outcome in labels {
            let series = format!("{name}{{outcome=\"{outcome}\"}} ");
            assert!(text.contains(&series), "no {series} in:\n{text}");
        }
    }
    // A wrong admin token does not matter here either.
    let response = app
        .http
        .get(app.url("/metrics"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn every_outcome_label_counts_what_happened() {
    let app = spawn_app_with(&[
        ("HOOKRELAY_DELIVERY_TIMEOUT_MS", "300"),
        ("HOOKRELAY_RETRY_MAX_ATTEMPTS", "1"),
    ])
    .await;
    let ok = Receiver::start().await;
    let refusing = Receiver::answering(|_| Reply::status(500)).await;
    let slow = Receiver::answering(|_| Reply::after(Duration::from_secs(2), 200)).await;
    let merchant = app.create_merchant("acme").await;
    app.create_endpoint("acme", &ok.url("/ok"), &[]).await;
    app.create_endpoint("acme", &refusing.url("/refusing"), &[]).await;
    app.create_endpoint("acme", &slow.url("/slow"), &[]).await;
    app.create_endpoint("acme", &format!("http://127.0.0.1:{}/dead", closed_port()), &[])
        .await;

    app.ingest(&merchant, r#"{"id":"one"}"#).await;
    app.ingest(&merchant, r#"{"id":"one"}"#).await;
    app.ingest(&merchant, "[]").await;

    for (name, outcome) in [
        ("hookrelay_events_ingested_total", "accepted"),
        ("hookrelay_events_ingested_total", "duplicate"),
        ("hookrelay_events_ingested_total", "rejected"),
        ("hookrelay_delivery_attempts_total", "success"),
        ("hookrelay_delivery_attempts_total", "http_error"),
        ("hookrelay_delivery_attempts_total", "timeout"),
        ("hookrelay_delivery_attempts_total", "connect_error"),
    ] {
        let series = format!("{name}{{outcome=\"{outcome}\"}}");
        assert_eq!(wait_for_metric(&app, &series, |v| v >= 1.0).await, 1.0, "{series}");
    }
    // One attempt in all: the three that did not succeed have failed for good.
    assert_eq!(
        wait_for_metric(&app, "hookrelay_deliveries_failed_total", |v| v >= 3.0).await,
        3.0
    );
    assert_eq!(
        wait_for_metric(&app, "hookrelay_delivery_duration_seconds_count", |v| v >= 4.0).await,
        4.0
    );
    let lag_count = wait_for_metric(&app, "hookrelay_delivery_lag_seconds_count", |v| v >= 1.0).await;
    assert_eq!(lag_count, 1.0, "only successes have a lag");
    assert!(app.metric("hookrelay_delivery_lag_seconds_sum").await < 5.0);
    assert_eq!(wait_for_metric(&app, "hookrelay_queue_depth", |v| v == 0.0).await, 0.0);
    assert_eq!(
        wait_for_metric(&app, "hookrelay_deliveries_in_flight", |v| v == 0.0).await,
        0.0
    );
}

#[tokio::test]
async fn the_in_flight_gauge_counts_an_attempt_under_way() {
    let app = spawn_app().await;
    let slow = Receiver::answering(|_| Reply::after(Duration::from_millis(1500), 200)).await;
    let merchant = app.create_merchant("acme").await;
    app.create_endpoint("acme", &slow.url("/slow"), &[]).await;
    assert_eq!(app.metric("hookrelay_deliveries_in_flight").await, 0.0);

    app.ingest(&merchant, r#"{"type":"a"}"#).await;
    wait_for_metric(&app, "hookrelay_deliveries_in_flight", |v| v == 1.0).await;
    slow.wait_for(1, Duration::from_secs(5)).await;
    wait_for_metric(&app, "hookrelay_deliveries_in_flight", |v| v == 0.0).await;
    wait_for_metric(&app, "hookrelay_queue_depth", |v| v == 0.0).await;
    assert_eq!(
        wait_for_metric(&app, "hookrelay_delivery_duration_seconds_count", |v| v >= 1.0).await,
        1.0
    );
    assert_eq!(
        app.metric(r#"hookrelay_delivery_attempts_total{outcome="success"}"#)
            .await,
        1.0
    );
    assert!(app.metric("hookrelay_delivery_duration_seconds_sum").await >= 1.4);
}

#[tokio::test]
async fn the_queue_depth_counts_pending_deliveries_and_scheduled_retries() {
    // The first retry is a minute away, so a refused delivery stays scheduled.
    let app = spawn_app_with(&[
        ("HOOKRELAY_RETRY_INITIAL_MS", "60000"),
        ("HOOKRELAY_RETRY_MAX_MS", "60000"),
    ])
    .await;
    let refusing = Receiver::answering(|_| Reply::status(503)).await;
    let merchant = app.create_merchant("acme").await;
    app.create_endpoint("acme", &refusing.url("/a"), &[]).await;
    app.create_endpoint("acme", &refusing.url("/b"), &[]).await;
    assert_eq!(app.metric("hookrelay_queue_depth").await, 0.0);

    app.ingest(&merchant, r#"{"type":"a"}"#).await;
    app.ingest(&merchant, r#"{"type":"b"}"#).await;
    refusing.wait_for(4, Duration::from_secs(5)).await;
    wait_for_metric(
        &app,
        r#"hookrelay_delivery_attempts_total{outcome="http_error"}"#,
        |v| v == 4.0,
    )
    .await;
    wait_for_metric(&app, "hookrelay_deliveries_in_flight", |v| v == 0.0).await;
    wait_for_metric(&app, "hookrelay_queue_depth", |v| v == 4.0).await;
}

#[tokio::test]
async fn the_openapi_document_lists_every_admin_route() {
    let app = spawn_app().await;
    let (status, document) = app.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200, "{document}");
    assert!(
        document["openapi"].as_str().is_some_and(|v| v.starts_with("3.")),
        "{}",
        document["openapi"]
    );
    assert!(document["info"]["title"].is_string());
    assert!(document["info"]["version"].is_string());

    // Parameter names are the document's own choice: compare with `{}` in their place.
    let normalize = |path: &str| -> String {
        let mut out = String::new();
        let mut in_param = false;
        for c in path.chars() {
            match c {
                '{' => {
                    in_param = true;
                    out.push_str("{}");
                }
                '}' => in_param = false,
                _ if !in_param => out.push(c),
                _ => {}
            }
        }
        out
    };
    let documented: BTreeSet<(String, String)> = document["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            let path = normalize(path);
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    let spec = [
        ("POST", "/api/v1/merchants"),
        ("GET", "/api/v1/merchants"),
        ("GET", "/api/v1/merchants/{}"),
        ("DELETE", "/api/v1/merchants/{}"),
        ("POST", "/api/v1/merchants/{}/endpoints"),
        ("GET", "/api/v1/merchants/{}/endpoints"),
        ("GET", "/api/v1/merchants/{}/endpoints/{}"),
        ("PATCH", "/api/v1/merchants/{}/endpoints/{}"),
        ("DELETE", "/api/v1/merchants/{}/endpoints/{}"),
        ("POST", "/api/v1/merchants/{}/endpoints/{}/rotate-secret"),
        ("POST", "/api/v1/merchants/{}/endpoints/{}/recover"),
        ("GET", "/api/v1/merchants/{}/events"),
        ("GET", "/api/v1/merchants/{}/events/{}"),
        ("GET", "/api/v1/merchants/{}/events/{}/attempts"),
        ("POST", "/api/v1/merchants/{}/events/{}/replay"),
    ];
    for (method, path) in spec {
        assert!(
            documented.contains(&(method.to_owned(), path.to_owned())),
            "{method} {path} missing from {documented:#?}"
        );
    }
    let schemes = &document["components"]["securitySchemes"];
    assert!(
        schemes
            .as_object()
            .is_some_and(|s| s.values().any(|v| v["scheme"] == "bearer")),
        "no bearer security scheme: {schemes}"
    );
}

#[tokio::test]
async fn an_unknown_route_is_404_and_a_wrong_method_405_both_json_errors() {
    let app = spawn_app().await;
    let admin = format!("Bearer {ADMIN_TOKEN}");
    let cases: [(Method, &str, Option<&str>); 7] = [
        (Method::GET, "/", None),
        (Method::GET, "/nope", None),
        (Method::POST, "/ingest", None),
        (Method::POST, "/ingest/", None),
        (Method::GET, "/api/v1/nope", Some(admin.as_str())),
        (Method::GET, "/api/v2/merchants", Some(admin.as_str())),
        (Method::GET, "/api/v1/merchants/acme/nope", Some(admin.as_str())),
    ];
    for (method, path, authorization) in cases {
        let (status, body) = app.send_raw(method.clone(), path, authorization, None).await;
        assert_error(status, &body, 404, "not_found", &format!("{method} {path}"));
    }
    let response = app.http.get(app.url("/nope")).send().await.unwrap();
    assert!(response.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("application/json"));
    // A known path with a method it does not take is 405, in the same shape.
    for (method, path) in [
        (Method::GET, "/ingest/acme"),
        (Method::POST, "/healthz"),
        (Method::DELETE, "/metrics"),
        (Method::PUT, "/api/v1/merchants"),
        (Method::POST, "/api/v1/merchants/acme/events"),
    ] {
        let authorization = path.starts_with("/api/").then_some(admin.as_str());
        let (status, body) = app.send_raw(method.clone(), path, authorization, None).await;
        assert_error(status, &body, 405, "method_not_allowed", &format!("{method} {path}"));
    }
}
