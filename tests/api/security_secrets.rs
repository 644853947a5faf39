//! Secrets at rest and in answers: ingest tokens, endpoint signing secrets and
//! provider secrets are encrypted in the data directory with `HOOKRELAY_SECRET_KEY`
//! (or a generated `secret_key`), shown only on creation, rotation or an explicit
//! reveal, and never logged. A start with another key is refused.

use std::path::Path;
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use hookrelay::config::Settings;
use hookrelay::startup::Application;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Sha256;
use tokio_util::sync::CancellationToken;

use crate::gateway::Gateway;
use crate::helpers::{assert_error, spawn_app, spawn_app_with, Received, Receiver, TestApp, ADMIN_TOKEN};

const WAIT: Duration = Duration::from_secs(5);

/// A `HOOKRELAY_SECRET_KEY` value: base64 of 32 times `byte`.
fn key(byte: u8) -> String {
    STANDARD.encode([byte; 32])
}

/// The settings of a test gateway on `dir` with this secret key.
fn settings_on(dir: &Path, secret_key: &str) -> Settings {
    let env = [
        ("HOOKRELAY_LISTEN", "127.0.0.1:0".to_owned()),
        ("HOOKRELAY_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("HOOKRELAY_DATA_DIR", dir.display().to_string()),
        ("HOOKRELAY_SECRET_KEY", secret_key.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    Settings::from_sources(None, &env).unwrap()
}

/// Every form in which `secret` could sit in a file: the text, and the bytes its
/// base64 part stands for.
fn forms_of(secret: &str) -> Vec<Vec<u8>> {
    let mut forms = vec![secret.as_bytes().to_vec()];
    if let Some(b64) = secret.strip_prefix("whsec_") {
        forms.push(b64.as_bytes().to_vec());
        forms.extend(STANDARD.decode(b64).ok());
    }
    if let Some(b64) = secret.strip_prefix("whk_") {
        forms.push(b64.as_bytes().to_vec());
        forms.push(URL_SAFE_NO_PAD.decode(b64).unwrap());
    }
    forms
}

/// Every file under `dir`, read whole.
fn read_all_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.push((path.display().to_string(), std::fs::read(&path).unwrap()));
            }
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

/// Whether a delivery's `webhook-signature` verifies with `secret`.
fn verifies(secret: &str, request: &Received) -> bool {
    let key = STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let signed = format!(
        "{}.{}.",
        request.header("webhook-id"),
        request.header("webhook-timestamp")
    );
    request.header("webhook-signature").split(' ').any(|entry| {
        let Some(claimed) = entry.strip_prefix("v1,").and_then(|b64| STANDARD.decode(b64).ok()) else {
            return false;
        };
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(signed.as_bytes());
        mac.update(&request.body);
        mac.verify_slice(&claimed).is_ok()
    })
}

async fn reveal_token(app: &TestApp, merchant: &str) -> Value {
    let (status, body) = app
        .post(&format!("/api/v1/merchants/{merchant}/reveal-token"), json!({}))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn reveal_secret(app: &TestApp, merchant: &str, endpoint: &str) -> Value {
    let (status, body) = app
        .post(
            &format!("/api/v1/merchants/{merchant}/endpoints/{endpoint}/reveal-secret"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

#[tokio::test]
async fn the_data_directory_holds_no_ingest_token_or_secret_in_plaintext_and_deliveries_still_verify() {
    let mut app = spawn_app().await;
    let receiver = Receiver::start().await;
    let (status, merchant) = app
        .post(
            "/api/v1/merchants",
            json!({
                "id": "acme",
                "name": "plainly-visible-merchant-name",
                "verification": { "scheme": "stripe", "secret": "whsec_provider_secret_0123456789" },
            }),
        )
        .await;
    assert_eq!(status, 201, "{merchant}");
    let other = app.create_merchant("globex").await;
    let endpoint = app.create_endpoint("acme", &receiver.url("/hook"), &[]).await;
    let given = format!("whsec_{}", STANDARD.encode([42u8; 32]));
    let (status, second) = app
        .post(
            "/api/v1/merchants/globex/endpoints",
            json!({ "url": receiver.url("/other"), "secret": given }),
        )
        .await;
    assert_eq!(status, 201, "{second}");
    // A rotation leaves a retired secret in the record too.
    let (status, rotated) = app
        .post(
            &format!(
                "/api/v1/merchants/globex/endpoints/{}/rotate-secret",
                second["id"].as_str().unwrap()
            ),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");

    let (status, answer) = app.ingest(&other, r#"{"type":"a"}"#).await;
    assert_eq!(status, 202, "{answer}");
    let got = receiver.wait_for(1, WAIT).await;
    assert!(
        verifies(rotated["secret"].as_str().unwrap(), &got[0]),
        "{:?}",
        got[0].headers
    );
    assert!(verifies(&given, &got[0]), "the retired secret signs beside the new one");

    app.stop().await;
    let secrets = [
        merchant["ingest_token"].as_str().unwrap(),
        other["ingest_token"].as_str().unwrap(),
        endpoint["secret"].as_str().unwrap(),
        &given,
        rotated["secret"].as_str().unwrap(),
        "whsec_provider_secret_0123456789",
    ];
    let files = read_all_files(app.data_dir.path());
    assert!(
        files
            .iter()
            .any(|(_, bytes)| contains(bytes, b"plainly-visible-merchant-name")),
        "the scan must see what is stored in the clear, or it proves nothing"
    );
    for secret in secrets {
        for form in forms_of(secret) {
            for (path, bytes) in &files {
                assert!(!contains(bytes, &form), "{path} holds {secret} in plaintext");
            }
        }
    }
}

#[tokio::test]
async fn a_restart_with_the_same_key_keeps_tokens_and_secrets_working() {
    let app = spawn_app_with(&[("HOOKRELAY_SECRET_KEY", &key(1))]).await;
    let receiver = Receiver::start().await;
    let merchant = app.create_merchant("acme").await;
    let endpoint = app.create_endpoint("acme", &receiver.url("/hook"), &[]).await;
    let endpoint_id = endpoint["id"].as_str().unwrap();

    let app = app.restart().await;
    // The same token, on the new port of the restarted test gateway.
    let revealed = reveal_token(&app, "acme").await;
    assert_eq!(revealed["ingest_token"], merchant["ingest_token"]);
    let (status, _) = app.ingest(&revealed, r#"{"type":"after.restart"}"#).await;
    assert_eq!(status, 202);
    let got = receiver.wait_for(1, WAIT).await;
    assert!(verifies(endpoint["secret"].as_str().unwrap(), &got[0]));
    assert_eq!(
        reveal_secret(&app, "acme", endpoint_id).await["secret"],
        endpoint["secret"]
    );
}

#[tokio::test]
async fn a_start_with_another_key_is_refused_with_an_error_naming_the_setting() {
    let mut app = spawn_app_with(&[("HOOKRELAY_SECRET_KEY", &key(1))]).await;
    let merchant = app.create_merchant("acme").await;
    app.stop().await;

    let error = Application::build(settings_on(app.data_dir.path(), &key(2)), CancellationToken::new())
        .await
        .err()
        .expect("another key must not open the store");
    let message = format!("{error:#}");
    assert!(message.contains("HOOKRELAY_SECRET_KEY"), "{message}");
    assert!(message.contains("another key"), "{message}");

    // Nothing was changed by the refused start: the right key still opens it.
    let app = app.restart().await;
    assert_eq!(
        reveal_token(&app, "acme").await["ingest_token"],
        merchant["ingest_token"]
    );
}

#[tokio::test]
async fn a_generated_key_is_kept_private_in_the_data_dir_and_losing_it_stops_the_start() {
    let app = spawn_app().await;
    app.create_merchant("acme").await;
    let path = app.data_dir.path().join("secret_key");
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{} has mode {:o}", path.display(), mode & 0o777);
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(STANDARD.decode(text.trim()).unwrap().len(), 32);

    let mut app = {
        let app = app.restart().await;
        let merchant = reveal_token(&app, "acme").await;
        let (status, _) = app.ingest(&merchant, r#"{"type":"a"}"#).await;
        assert_eq!(status, 202, "the kept key opens the store again");
        app
    };
    app.stop().await;
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text, "the key changed");

    std::fs::remove_file(&path).unwrap();
    let mut env = settings_on(app.data_dir.path(), &key(3));
    env.secret_key = None;
    let error = Application::build(env, CancellationToken::new())
        .await
        .err()
        .expect("a new key must not open data sealed with the lost one");
    assert!(format!("{error:#}").contains("HOOKRELAY_SECRET_KEY"), "{error:#}");
}

#[tokio::test]
async fn a_malformed_secret_key_setting_stops_start_up_naming_it() {
    for bad in ["short", "not base64 at all!", &STANDARD.encode([1u8; 16])] {
        let env = [("HOOKRELAY_SECRET_KEY".to_owned(), bad.to_owned())]
            .into_iter()
            .collect();
        let error = Settings::from_sources(None, &env).unwrap_err().to_string();
        assert!(error.contains("HOOKRELAY_SECRET_KEY"), "{error}");
        assert!(!error.contains(bad), "the value is echoed: {error}");
    }
}

/// Every key of a JSON value, at any depth.
fn keys_of(value: &Value, out: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                out.push(key.clone());
                keys_of(inner, out);
            }
        }
        Value::Array(items) => items.iter().for_each(|item| keys_of(item, out)),
        _ => {}
    }
}

#[tokio::test]
async fn reads_lists_and_changes_show_no_secret_while_creation_shows_it_once() {
    let app = spawn_app().await;
    let merchant = app.create_merchant("acme").await;
    assert!(merchant["ingest_token"].is_string() && merchant["ingest_url"].is_string());
    let endpoint = app.create_endpoint("acme", "https://example.com/hook", &[]).await;
    assert!(endpoint["secret"].is_string());
    let ep = endpoint["id"].as_str().unwrap();
    let merchant_path = "/api/v1/merchants/acme";
    let endpoint_path = format!("{merchant_path}/endpoints/{ep}");

    let answers = [
        app.get(merchant_path).await,
        app.get("/api/v1/merchants").await,
        app.admin(Method::PATCH, merchant_path, Some(json!({ "name": "Acme" })))
            .await,
        app.get(&endpoint_path).await,
        app.get(&format!("{merchant_path}/endpoints")).await,
        app.admin(Method::PATCH, &endpoint_path, Some(json!({ "enabled": true })))
            .await,
    ];
    let secrets = [
        merchant["ingest_token"].as_str().unwrap(),
        endpoint["secret"].as_str().unwrap(),
    ];
    for (n, (status, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 200, "answer {n}: {body}");
        let mut keys = Vec::new();
        keys_of(body, &mut keys);
        for field in ["secret", "ingest_token", "ingest_url"] {
            assert!(!keys.iter().any(|k| k == field), "answer {n} has {field}: {body}");
        }
        for secret in secrets {
            assert!(!body.to_string().contains(secret), "answer {n} shows a secret: {body}");
        }
    }
    assert_eq!(answers[0].1["name"], "acme");
    assert_eq!(answers[2].1["name"], "Acme");
    assert_eq!(answers[3].1["url"], "https://example.com/hook");
}

#[tokio::test]
async fn reveal_answers_the_token_and_the_secrets_that_still_sign() {
    let app = spawn_app().await;
    let merchant = app.create_merchant("acme").await;
    let endpoint = app.create_endpoint("acme", "https://example.com/hook", &[]).await;
    let ep = endpoint["id"].as_str().unwrap();

    let token = reveal_token(&app, "acme").await;
    assert_eq!(
        token,
        json!({ "ingest_token": merchant["ingest_token"], "ingest_url": merchant["ingest_url"] })
    );
    let secrets = reveal_secret(&app, "acme", ep).await;
    assert_eq!(secrets, json!({ "secret": endpoint["secret"], "previous_secrets": [] }));

    let (status, rotated) = app
        .post(
            &format!("/api/v1/merchants/acme/endpoints/{ep}/rotate-secret"),
            json!({}),
        )
        .await;
    assert_eq!(status, 200, "{rotated}");
    let secrets = reveal_secret(&app, "acme", ep).await;
    assert_eq!(secrets["secret"], rotated["secret"]);
    let previous = secrets["previous_secrets"].as_array().unwrap();
    assert_eq!(previous.len(), 1, "{secrets}");
    assert_eq!(previous[0]["secret"], endpoint["secret"]);
    assert_eq!(previous[0]["expires_at"], rotated["previous_secret_expires_at"]);

    // Unknown things are 404; without the admin token, 401.
    for path in [
        "/api/v1/merchants/nope/reveal-token".to_owned(),
        "/api/v1/merchants/nope/rotate-token".to_owned(),
        format!("/api/v1/merchants/nope/endpoints/{ep}/reveal-secret"),
        "/api/v1/merchants/acme/endpoints/ep_0190a1b2c3d4e5f60718293a4b5c6d7e/reveal-secret".to_owned(),
    ] {
        let (status, body) = app.post(&path, json!({})).await;
        assert_error(status, &body, 404, "not_found", &path);
    }
    for path in [
        "/api/v1/merchants/acme/reveal-token".to_owned(),
        format!("/api/v1/merchants/acme/endpoints/{ep}/reveal-secret"),
    ] {
        let (status, body) = app.send_raw(Method::POST, &path, None, None).await;
        assert_error(status, &body, 401, "unauthorized", &path);
        let (status, body) = app
            .send_raw(Method::GET, &path, Some(&format!("Bearer {ADMIN_TOKEN}")), None)
            .await;
        assert_error(status, &body, 405, "method_not_allowed", &path);
    }
}

#[tokio::test]
async fn rotating_the_ingest_token_stops_the_old_one_at_once() {
    let app = spawn_app().await;
    let merchant = app.create_merchant("acme").await;
    let (status, rotated) = app.post("/api/v1/merchants/acme/rotate-token", json!({})).await;
    assert_eq!(status, 200, "{rotated}");
    assert_ne!(rotated["ingest_token"], merchant["ingest_token"]);
    assert_eq!(
        rotated["ingest_url"],
        format!(
            "{}/ingest/acme?token={}",
            app.address,
            rotated["ingest_token"].as_str().unwrap()
        )
    );
    assert_eq!(rotated["id"], "acme");

    let (status, body) = app.ingest(&merchant, r#"{"type":"a"}"#).await;
    assert_error(status, &body, 401, "unauthorized", "the old token");
    let (status, _) = app.ingest(&rotated, r#"{"type":"a"}"#).await;
    assert_eq!(status, 202);
    assert_eq!(
        reveal_token(&app, "acme").await["ingest_token"],
        rotated["ingest_token"]
    );
    let (_, events) = app.get("/api/v1/merchants/acme/events").await;
    assert_eq!(events["data"].as_array().unwrap().len(), 1, "{events}");
}

#[tokio::test]
async fn no_token_or_secret_is_ever_logged() {
    let gateway = Gateway::new()
        .without_env("HOOKRELAY_ADMIN_TOKEN")
        .env("HOOKRELAY_LOG", "debug");
    let mut process = gateway.start().await;
    let admin_token = std::fs::read_to_string(gateway.data_path().join("admin_token")).unwrap();
    process.admin_token = admin_token.trim().to_owned();
    let receiver = Receiver::start().await;
    let (status, merchant) = process
        .admin(
            Method::POST,
            "/api/v1/merchants",
            Some(json!({ "id": "acme", "verification": { "scheme": "hmac_sha256", "secret": "provider-secret-xyz", "header": "x-sig", "encoding": "hex" } })),
        )
        .await;
    assert_eq!(status, 201, "{merchant}");
    let endpoint = process.create_endpoint("acme", &receiver.url("/hook"), &[]).await;
    let ep = endpoint["id"].as_str().unwrap();
    let (_, rotated) = process
        .admin(
            Method::POST,
            &format!("/api/v1/merchants/acme/endpoints/{ep}/rotate-secret"),
            None,
        )
        .await;
    let (_, token) = process
        .admin(Method::POST, "/api/v1/merchants/acme/reveal-token", None)
        .await;
    let mut mac = Hmac::<Sha256>::new_from_slice(b"provider-secret-xyz").unwrap();
    mac.update(br#"{"type":"a"}"#);
    let signature: String = mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect();
    let response = process
        .http
        .post(token["ingest_url"].as_str().unwrap())
        .header("x-sig", &signature)
        .body(r#"{"type":"a"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202);
    receiver.wait_for(1, WAIT).await;
    process.terminate();
    process.expect_exit(Duration::from_secs(10)).await;

    let log = process.stderr();
    let key = std::fs::read_to_string(gateway.data_path().join("secret_key")).unwrap();
    assert!(log.contains("secret_key"), "the key file's path is logged:\n{log}");
    for secret in [
        merchant["ingest_token"].as_str().unwrap(),
        endpoint["secret"].as_str().unwrap(),
        rotated["secret"].as_str().unwrap(),
        "provider-secret-xyz",
        key.trim(),
        process.admin_token.as_str(),
    ] {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
    }
}

#[tokio::test]
async fn a_data_directory_written_before_encryption_is_sealed_at_the_first_start() {
    // The records as an earlier version wrote them, secrets in plaintext.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("FORMAT"), "hookrelay-sled 1\n").unwrap();
    let token = "whk_legacy-token-0123456789abcdefghijklmnopqrstu";
    let secret = format!("whsec_{}", STANDARD.encode([9u8; 24]));
    {
        let db = sled::open(dir.path()).unwrap();
        let merchant = json!({ "id": "old", "name": null, "ingest_token": token, "created_at": 1 });
        db.open_tree("merchants")
            .unwrap()
            .insert("old", serde_json::to_vec(&merchant).unwrap())
            .unwrap();
        let endpoint = json!({
            "id": "ep_0190a1b2c3d4e5f60718293a4b5c6d7e", "merchant_id": "old",
            "url": "https://example.com/hook", "event_types": [], "description": null,
            "secret": secret, "retired_secrets": [], "enabled": true, "created_at": 1, "updated_at": 1,
        });
        let mut key = b"old\0".to_vec();
        key.extend_from_slice(b"ep_0190a1b2c3d4e5f60718293a4b5c6d7e");
        db.open_tree("endpoints")
            .unwrap()
            .insert(key, serde_json::to_vec(&endpoint).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let stop = CancellationToken::new();
    let app = Application::build(settings_on(dir.path(), &key(5)), stop.clone())
        .await
        .expect("the old data opens");
    let port = app.port();
    let task = tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let response = http
        .post(format!("http://127.0.0.1:{port}/ingest/old?token={token}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 202, "the old token still works");
    let revealed: Value = http
        .post(format!(
            "http://127.0.0.1:{port}/api/v1/merchants/old/endpoints/ep_0190a1b2c3d4e5f60718293a4b5c6d7e/reveal-secret"
        ))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(revealed["secret"], secret.as_str());
    stop.cancel();
    task.await.unwrap().unwrap();

    // Sealed now: a start with another key is refused.
    let error = Application::build(settings_on(dir.path(), &key(6)), CancellationToken::new())
        .await
        .err()
        .expect("sealed with the first key");
    assert!(format!("{error:#}").contains("HOOKRELAY_SECRET_KEY"));
}
