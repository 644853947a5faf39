use std::time::Duration;

use crate::helpers::{spawn_app, Receiver};

#[tokio::test]
async fn an_ingested_event_reaches_its_endpoint() {
    let app = spawn_app().await;
    let receiver = Receiver::start().await;
    let merchant = app.create_merchant("acme").await;
    app.create_endpoint("acme", &receiver.url("/hook"), &[]).await;
    let (status, body) = app.ingest(&merchant, r#"{"id":"x1","type":"a.b"}"#).await;
    assert_eq!(status, 202, "{body}");
    let got = receiver.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(got[0].header("webhook-id"), body["event_id"].as_str().unwrap());
}
