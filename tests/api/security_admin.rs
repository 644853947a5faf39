//! Admin access: named tokens kept as hashes, read and write scopes (401 vs 403),
//! and the audit log of changes and refusals.

use reqwest::Method;
use serde_json::{json, Value};

use crate::helpers::{assert_error, closed_port, spawn_app, TestApp, ADMIN_TOKEN};

/// A request with `Authorization: Bearer {token}`.
async fn as_token(app: &TestApp, token: &str, method: Method, path: &str, body: Option<&str>) -> (u16, Value) {
    app.send_raw(method, path, Some(&format!("Bearer {token}")), body).await
}

/// Creates an admin token with the bootstrap token and returns the answer.
async fn create_token(app: &TestApp, name: &str, scope: &str) -> Value {
    let (status, body) = app
        .post("/api/v1/admin-tokens", json!({ "name": name, "scope": scope }))
        .await;
    assert_eq!(status, 201, "{body}");
    body
}

fn secret_of(created: &Value) -> String {
    created["token"].as_str().expect("token").to_owned()
}

/// The whole audit log, newest first, read page by page (`limit` per page).
async fn audit_log(app: &TestApp, limit: usize) -> Vec<Value> {
    let mut entries = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/api/v1/audit-log?limit={limit}&cursor={cursor}"),
            None => format!("/api/v1/audit-log?limit={limit}"),
        };
        let (status, page) = app.get(&path).await;
        assert_eq!(status, 200, "{page}");
        let data = page["data"].as_array().expect("data");
        assert!(data.len() <= limit, "{page}");
        entries.extend(data.iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return entries,
        }
    }
}

/// `(token_name, method, path, status)` of each entry.
fn summary(entries: &[Value]) -> Vec<(String, String, String, u64)> {
    entries
        .iter()
        .map(|e| {
            (
                e["token_name"].as_str().unwrap().to_owned(),
                e["method"].as_str().unwrap().to_owned(),
                e["path"].as_str().unwrap().to_owned(),
                e["status"].as_u64().unwrap(),
            )
        })
        .collect()
}

fn row(token: &str, method: &str, path: &str, status: u64) -> (String, String, String, u64) {
    (token.to_owned(), method.to_owned(), path.to_owned(), status)
}

#[tokio::test]
async fn a_read_token_reads_every_route_but_every_change_is_403_and_changes_nothing() {
    let app = spawn_app().await;
    let merchant = app.create_merchant("acme").await;
    let dead = format!("http://127.0.0.1:{}/dead", closed_port());
    let endpoint = app.create_endpoint("acme", &dead, &[]).await;
    let (_, event) = app.ingest(&merchant, r#"{"type":"a"}"#).await;
    let (ep, evt) = (endpoint["id"].as_str().unwrap(), event["event_id"].as_str().unwrap());
    create_token(&app, "victim", "write").await;
    let read = secret_of(&create_token(&app, "dashboard", "read").await);
    let m = "/api/v1/merchants/acme";

    let reads = [
        "/api/v1/openapi.json".to_owned(),
        "/api/v1/merchants".into(),
        m.into(),
        format!("{m}/endpoints"),
        format!("{m}/endpoints/{ep}"),
        format!("{m}/events"),
        format!("{m}/events/{evt}"),
        format!("{m}/events/{evt}/attempts"),
        "/api/v1/admin-tokens".into(),
        "/api/v1/audit-log".into(),
    ];
    let secrets = [
        merchant["ingest_token"].as_str().unwrap(),
        endpoint["secret"].as_str().unwrap(),
    ];
    for path in &reads {
        let (status, body) = as_token(&app, &read, Method::GET, path, None).await;
        assert_eq!(status, 200, "GET {path} with a read token: {body}");
        for secret in secrets {
            assert!(!body.to_string().contains(secret), "GET {path} shows a secret: {body}");
        }
    }

    let changes: Vec<(Method, String, Option<&str>)> = vec![
        (Method::POST, "/api/v1/merchants".into(), Some(r#"{"id":"intruder"}"#)),
        (Method::DELETE, m.into(), None),
        (Method::PATCH, m.into(), Some(r#"{"name":"renamed"}"#)),
        (Method::POST, format!("{m}/reveal-token"), None),
        (Method::POST, format!("{m}/rotate-token"), None),
        (
            Method::POST,
            format!("{m}/endpoints"),
            Some(r#"{"url":"https://evil.example/h"}"#),
        ),
        (
            Method::PATCH,
            format!("{m}/endpoints/{ep}"),
            Some(r#"{"enabled":false}"#),
        ),
        (Method::DELETE, format!("{m}/endpoints/{ep}"), None),
        (Method::POST, format!("{m}/endpoints/{ep}/rotate-secret"), Some("{}")),
        (Method::POST, format!("{m}/endpoints/{ep}/reveal-secret"), None),
        (
            Method::POST,
            format!("{m}/endpoints/{ep}/recover"),
            Some(r#"{"since":"2020-01-01T00:00:00Z"}"#),
        ),
        (Method::POST, format!("{m}/events/{evt}/replay"), Some("{}")),
        (
            Method::POST,
            "/api/v1/admin-tokens".into(),
            Some(r#"{"name":"mine","scope":"write"}"#),
        ),
        (Method::DELETE, "/api/v1/admin-tokens/victim".into(), None),
        (Method::DELETE, "/api/v1/admin-tokens/dashboard".into(), None),
    ];
    for (method, path, body) in &changes {
        let (status, answer) = as_token(&app, &read, method.clone(), path, *body).await;
        assert_error(
            status,
            &answer,
            403,
            "forbidden",
            &format!("{method} {path} with a read token"),
        );
    }

    // Nothing was created, changed or deleted.
    let (_, merchants) = app.get("/api/v1/merchants").await;
    assert_eq!(merchants["data"].as_array().unwrap().len(), 1, "{merchants}");
    let (status, now) = app.get(&format!("{m}/endpoints/{ep}")).await;
    assert_eq!(status, 200, "{now}");
    assert_eq!((&now["enabled"], &now["url"]), (&json!(true), &json!(dead)));
    assert_eq!(now["previous_secret_expires_at"], Value::Null, "not rotated: {now}");
    let (_, acme) = app.get(m).await;
    assert_eq!(acme["name"], "acme", "not renamed");
    let (status, answer) = app.ingest(&merchant, r#"{"type":"b"}"#).await;
    assert_eq!(status, 202, "the ingest token was not rotated: {answer}");
    let detail = app.event("acme", evt).await;
    assert_eq!(detail["deliveries"][0]["endpoint_id"], ep);
    let (_, tokens) = app.get("/api/v1/admin-tokens").await;
    let names: Vec<&str> = tokens["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["bootstrap", "dashboard", "victim"]);
}

#[tokio::test]
async fn a_created_token_works_is_listed_without_its_secret_and_is_401_once_deleted() {
    let app = spawn_app().await;
    let created = create_token(&app, "ci-deploy", "write").await;
    let token = secret_of(&created);
    assert!(token.starts_with("hra_") && token.len() >= 4 + 43, "{created}");
    assert_eq!(
        (&created["name"], &created["scope"]),
        (&json!("ci-deploy"), &json!("write"))
    );
    assert!(
        chrono::DateTime::parse_from_rfc3339(created["created_at"].as_str().unwrap()).is_ok(),
        "{created}"
    );
    let other = secret_of(&create_token(&app, "ci-other", "write").await);
    assert_ne!(token, other);

    let (status, body) = as_token(&app, &token, Method::POST, "/api/v1/merchants", Some(r#"{"id":"m1"}"#)).await;
    assert_eq!(status, 201, "a write token creates: {body}");

    let (status, list) = as_token(&app, &token, Method::GET, "/api/v1/admin-tokens", None).await;
    assert_eq!(status, 200, "{list}");
    let hash = hookrelay::domain::TokenHash::of(&token).to_hex();
    let text = list.to_string();
    assert!(
        !text.contains(&token) && !text.contains(&hash) && !text.contains(ADMIN_TOKEN),
        "{text}"
    );
    let expected = json!([
        {"name": "bootstrap", "scope": "write", "created_at": null},
        {"name": "ci-deploy", "scope": "write", "created_at": created["created_at"]},
    ]);
    assert_eq!(list["data"].as_array().unwrap()[..2], expected.as_array().unwrap()[..]);
    let (_, first) = app.get("/api/v1/admin-tokens?limit=2").await;
    let (_, second) = app
        .get(&format!(
            "/api/v1/admin-tokens?limit=2&cursor={}",
            first["next_cursor"].as_str().unwrap()
        ))
        .await;
    assert_eq!(second["data"][0]["name"], "ci-other");
    assert_eq!(second["next_cursor"], Value::Null);

    let (status, body) = app.admin(Method::DELETE, "/api/v1/admin-tokens/ci-deploy", None).await;
    assert_eq!(status, 204, "{body}");
    let response = app
        .http
        .get(app.url("/api/v1/merchants"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()["www-authenticate"], "Bearer");
    let answer: Value = response.json().await.unwrap();
    assert_error(401, &answer, 401, "unauthorized", "a deleted token");
    let (status, _) = as_token(&app, &other, Method::GET, "/api/v1/merchants", None).await;
    assert_eq!(status, 200, "the other token still works");
    let (status, answer) = app.admin(Method::DELETE, "/api/v1/admin-tokens/ci-deploy", None).await;
    assert_error(status, &answer, 404, "not_found", "deleting it twice");
}

#[tokio::test]
async fn unknown_or_malformed_tokens_are_401_whatever_the_method() {
    let app = spawn_app().await;
    let read = secret_of(&create_token(&app, "dashboard", "read").await);
    let credentials = [
        ("a read token with a suffix", format!("Bearer {read}x")),
        ("a prefix of a read token", format!("Bearer {}", &read[..20])),
        ("a read token under Basic", format!("Basic {read}")),
        ("an overlong token", format!("Bearer hra_{}", "a".repeat(5_000))),
        ("an empty bearer token", "Bearer ".to_owned()),
    ];
    for method in [Method::GET, Method::POST, Method::DELETE] {
        for (case, authorization) in &credentials {
            let (status, answer) = app
                .send_raw(method.clone(), "/api/v1/admin-tokens", Some(authorization), Some("{}"))
                .await;
            assert_error(status, &answer, 401, "unauthorized", &format!("{method} with {case}"));
        }
    }
}

#[tokio::test]
async fn bad_token_requests_are_refused_with_a_clear_code() {
    let app = spawn_app().await;
    create_token(&app, "taken", "read").await;
    let cases = [
        (json!({"name": "", "scope": "read"}), 422, "invalid_token_name"),
        (json!({"name": "has space", "scope": "read"}), 422, "invalid_token_name"),
        (json!({"name": "a/b", "scope": "read"}), 422, "invalid_token_name"),
        (
            json!({"name": "x".repeat(65), "scope": "read"}),
            422,
            "invalid_token_name",
        ),
        (json!({"name": "ok", "scope": "admin"}), 422, "invalid_scope"),
        (json!({"name": "ok", "scope": "READ"}), 422, "invalid_scope"),
        (json!({"name": "ok"}), 422, "validation_error"),
        (
            json!({"name": "ok", "scope": "read", "token": "mine"}),
            422,
            "validation_error",
        ),
        (json!({"name": "taken", "scope": "write"}), 409, "token_exists"),
        (json!({"name": "bootstrap", "scope": "write"}), 409, "token_exists"),
    ];
    for (body, status_expected, code) in cases {
        let (status, answer) = app.post("/api/v1/admin-tokens", body.clone()).await;
        assert_error(status, &answer, status_expected, code, &body.to_string());
    }
    let (_, tokens) = app.get("/api/v1/admin-tokens").await;
    assert_eq!(tokens["data"].as_array().unwrap().len(), 2, "{tokens}");
}

#[tokio::test]
async fn the_bootstrap_token_cannot_be_deleted_and_keeps_working() {
    let app = spawn_app().await;
    let other = secret_of(&create_token(&app, "ops", "write").await);
    for token in [ADMIN_TOKEN, other.as_str()] {
        let (status, answer) = as_token(&app, token, Method::DELETE, "/api/v1/admin-tokens/bootstrap", None).await;
        assert_error(status, &answer, 409, "bootstrap_token_protected", "deleting bootstrap");
    }
    let (status, _) = app.get("/api/v1/merchants").await;
    assert_eq!(status, 200);
}

/// Every file under `dir`, read whole.
fn files_under(dir: &std::path::Path) -> Vec<(std::path::PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(files_under(&path));
        } else {
            files.push((path.clone(), std::fs::read(&path).unwrap()));
        }
    }
    files
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|window| window == needle)
}

#[tokio::test]
async fn the_data_directory_holds_token_hashes_never_the_tokens() {
    let mut app = spawn_app().await;
    let tokens = [
        secret_of(&create_token(&app, "ops", "write").await),
        secret_of(&create_token(&app, "dashboard", "read").await),
    ];
    // A stop syncs and closes the store, so everything written is in the files.
    app.stop().await;
    let files = files_under(app.data_dir.path());
    assert!(!files.is_empty());
    for token in &tokens {
        let hash = hookrelay::domain::TokenHash::of(token).to_hex();
        assert!(
            files.iter().any(|(_, bytes)| contains(bytes, hash.as_bytes())),
            "the hash of a token is stored (so the search below looks at the right files)"
        );
        for (path, bytes) in &files {
            assert!(!contains(bytes, token.as_bytes()), "{} holds a token", path.display());
        }
    }
    for (path, bytes) in &files {
        assert!(
            !contains(bytes, ADMIN_TOKEN.as_bytes()),
            "{} holds the bootstrap token",
            path.display()
        );
    }
}

#[tokio::test]
async fn every_change_and_refusal_is_audited_newest_first_and_paged_without_bodies() {
    let app = spawn_app().await;
    let (status, _) = app
        .post(
            "/api/v1/merchants",
            json!({"id": "acme", "name": "name-that-must-not-be-logged"}),
        )
        .await;
    assert_eq!(status, 201);
    let read = secret_of(&create_token(&app, "dashboard", "read").await);
    // Reads are not recorded, whoever makes them.
    app.get("/api/v1/merchants").await;
    as_token(&app, &read, Method::GET, "/api/v1/merchants/acme", None).await;
    let steps: Vec<(Option<String>, Method, &str)> = vec![
        (Some(read.clone()), Method::DELETE, "/api/v1/merchants/acme"),
        (
            None,
            Method::POST,
            "/api/v1/merchants?token=query-that-must-not-be-logged",
        ),
        (
            Some("wrong-token".into()),
            Method::DELETE,
            "/api/v1/admin-tokens/dashboard",
        ),
        (Some("wrong-token".into()), Method::GET, "/api/v1/merchants"),
        (
            Some(ADMIN_TOKEN.into()),
            Method::PATCH,
            "/api/v1/merchants/acme/endpoints/ep_nope",
        ),
        (
            Some(ADMIN_TOKEN.into()),
            Method::DELETE,
            "/api/v1/admin-tokens/dashboard",
        ),
    ];
    for (token, method, path) in steps {
        let authorization = token.map(|t| format!("Bearer {t}"));
        app.send_raw(
            method,
            path,
            authorization.as_deref(),
            Some(r#"{"description":"body-secret"}"#),
        )
        .await;
    }

    let log = audit_log(&app, 3).await;
    assert_eq!(
        summary(&log),
        [
            row("bootstrap", "DELETE", "/api/v1/admin-tokens/dashboard", 204),
            row("bootstrap", "PATCH", "/api/v1/merchants/acme/endpoints/ep_nope", 404),
            row("unknown", "GET", "/api/v1/merchants", 401),
            row("unknown", "DELETE", "/api/v1/admin-tokens/dashboard", 401),
            row("unknown", "POST", "/api/v1/merchants", 401),
            row("dashboard", "DELETE", "/api/v1/merchants/acme", 403),
            row("bootstrap", "POST", "/api/v1/admin-tokens", 201),
            row("bootstrap", "POST", "/api/v1/merchants", 201),
        ]
    );
    assert_eq!(log, audit_log(&app, 500).await, "pages of 3 give the same list");
    assert_eq!(log[0]["resource"], json!({"admin_token": "dashboard"}));
    assert_eq!(
        log[1]["resource"],
        json!({"merchant_id": "acme", "endpoint_id": "ep_nope"})
    );
    assert_eq!(
        log[6]["resource"],
        json!({"admin_token": "dashboard"}),
        "the created token is named"
    );
    assert_eq!(log[7]["resource"], json!({}));
    for entry in &log {
        assert!(
            chrono::DateTime::parse_from_rfc3339(entry["at"].as_str().unwrap()).is_ok(),
            "{entry}"
        );
    }
    let text = serde_json::to_string(&log).unwrap();
    for secret in [
        "name-that-must-not-be-logged",
        "query-that-must-not-be-logged",
        "body-secret",
        &read,
    ] {
        assert!(!text.contains(secret), "{secret} is in the audit log: {text}");
    }

    // The log is readable with read scope, and a bad cursor is a client error.
    let viewer = secret_of(&create_token(&app, "viewer", "read").await);
    let (status, page) = as_token(&app, &viewer, Method::GET, "/api/v1/audit-log?limit=1", None).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["data"][0]["path"], "/api/v1/admin-tokens");
    for cursor in ["!!!", "bm90LWEtbnVtYmVy"] {
        let (status, answer) = app.get(&format!("/api/v1/audit-log?cursor={cursor}")).await;
        assert_error(status, &answer, 400, "invalid_cursor", cursor);
    }
}

#[tokio::test]
async fn tokens_and_the_audit_log_survive_a_restart() {
    let app = spawn_app().await;
    let read = secret_of(&create_token(&app, "dashboard", "read").await);
    let (status, _) = as_token(&app, &read, Method::POST, "/api/v1/merchants", Some("{}")).await;
    assert_eq!(status, 403);
    let before = audit_log(&app, 500).await;
    assert_eq!(before.len(), 2);

    let app = app.restart().await;
    let (status, _) = as_token(&app, &read, Method::GET, "/api/v1/merchants", None).await;
    assert_eq!(status, 200, "the read token still reads");
    let (status, _) = as_token(&app, &read, Method::POST, "/api/v1/merchants", Some("{}")).await;
    assert_eq!(status, 403, "and still may not write");
    let after = audit_log(&app, 500).await;
    assert_eq!(after.len(), 3, "{after:#?}");
    assert_eq!(after[1..], before[..], "new entries come first, the old ones are kept");
}

#[tokio::test]
async fn the_openapi_document_describes_admin_tokens_and_the_audit_log() {
    let app = spawn_app().await;
    let (status, document) = app.get("/api/v1/openapi.json").await;
    assert_eq!(status, 200);
    let paths = &document["paths"];
    let cases = [
        ("/api/v1/admin-tokens", "post", &["201", "401", "403", "409", "422"][..]),
        ("/api/v1/admin-tokens", "get", &["200", "401"][..]),
        (
            "/api/v1/admin-tokens/{name}",
            "delete",
            &["204", "401", "403", "404", "409"][..],
        ),
        ("/api/v1/audit-log", "get", &["200", "401"][..]),
        ("/api/v1/merchants", "post", &["401", "403"][..]),
    ];
    for (path, method, statuses) in cases {
        let responses = &paths[path][method]["responses"];
        for status in statuses {
            assert!(
                responses[status].is_object(),
                "{method} {path} lacks {status}: {responses}"
            );
        }
    }
}
