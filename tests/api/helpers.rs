//! `spawn_app()` and programmable receivers.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant};

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use hookrelay::config::Settings;
use hookrelay::startup::Application;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

static TRACING: Once = Once::new();

fn init_tracing() {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            let _ = hookrelay::telemetry::init_tracing("info", hookrelay::config::LogFormat::Text);
        }
    });
}

/// A running gateway.
pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub admin_token: String,
    pub http: reqwest::Client,
    /// Kept so a restart opens the same directory; removed when the test ends.
    pub data_dir: Arc<TempDir>,
    overrides: Vec<(String, String)>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

/// Starts a gateway with fast retries; `overrides` are `HOOKRELAY_*` settings.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(&[]).await
}

pub async fn spawn_app_with(overrides: &[(&str, &str)]) -> TestApp {
    let data_dir = Arc::new(tempfile::tempdir().expect("temp dir"));
    let overrides = overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    start(data_dir, overrides).await
}

fn settings_for(data_dir: &TempDir, overrides: &[(String, String)]) -> Settings {
    let mut env: BTreeMap<String, String> = [
        ("HOOKRELAY_LISTEN", "127.0.0.1:0"),
        ("HOOKRELAY_ADMIN_TOKEN", ADMIN_TOKEN),
        ("HOOKRELAY_RETRY_INITIAL_MS", "100"),
        ("HOOKRELAY_RETRY_MAX_MS", "400"),
        ("HOOKRELAY_RETRY_MAX_ATTEMPTS", "5"),
        ("HOOKRELAY_DELIVERY_TIMEOUT_MS", "2000"),
        ("HOOKRELAY_SHUTDOWN_GRACE_MS", "3000"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    env.insert("HOOKRELAY_DATA_DIR".into(), data_dir.path().display().to_string());
    env.extend(overrides.iter().cloned());
    Settings::from_sources(None, &env).expect("valid test settings")
}

async fn start(data_dir: Arc<TempDir>, overrides: Vec<(String, String)>) -> TestApp {
    init_tracing();
    let settings = settings_for(&data_dir, &overrides);
    let stop = CancellationToken::new();
    let app = Application::build(settings, stop.clone())
        .await
        .expect("the app builds");
    let port = app.port();
    let admin_token = app.admin_token().to_owned();
    let task = tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        admin_token,
        http: reqwest::Client::builder().no_proxy().build().unwrap(),
        data_dir,
        overrides,
        stop,
        task: Some(task),
    }
}

impl TestApp {
    /// Stops the gateway as SIGTERM would and waits until it has.
    pub async fn stop(&mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.await.expect("app task").expect("clean stop");
        }
    }

    /// Stops, then starts a new gateway on the same data directory.
    pub async fn restart(mut self) -> TestApp {
        self.stop().await;
        start(self.data_dir.clone(), self.overrides.clone()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path)).bearer_auth(&self.admin_token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("admin request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.admin(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.admin(reqwest::Method::POST, path, Some(body)).await
    }

    /// Creates a merchant and returns its JSON (with `ingest_token`).
    pub async fn create_merchant(&self, id: &str) -> Value {
        let (status, body) = self.post("/api/v1/merchants", json!({ "id": id, "name": id })).await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Registers an endpoint and returns its JSON (with `id` and `secret`).
    pub async fn create_endpoint(&self, merchant: &str, url: &str, event_types: &[&str]) -> Value {
        let body = json!({ "url": url, "event_types": event_types });
        let (status, body) = self
            .post(&format!("/api/v1/merchants/{merchant}/endpoints"), body)
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Sends an event the way a provider does (token in the query string).
    pub async fn ingest(&self, merchant: &Value, body: &str) -> (u16, Value) {
        let url = merchant["ingest_url"].as_str().expect("ingest_url");
        let response = self
            .http
            .post(url)
            .body(body.to_owned())
            .send()
            .await
            .expect("ingest request");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// The event's detail (with `deliveries`).
    pub async fn event(&self, merchant: &str, event_id: &str) -> Value {
        let (status, body) = self
            .get(&format!("/api/v1/merchants/{merchant}/events/{event_id}"))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Polls until every delivery of the event has one of `statuses`.
    pub async fn wait_for_deliveries(&self, merchant: &str, event_id: &str, status: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let event = self.event(merchant, event_id).await;
            let deliveries = event["deliveries"].as_array().unwrap();
            if deliveries.iter().all(|d| d["status"] == status) {
                return event;
            }
            assert!(
                Instant::now() < deadline,
                "deliveries never all became {status}: {event:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The value of one metric series from `/metrics` (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
            .map(|value| value.trim().parse().unwrap())
            .unwrap_or(0.0)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// One request a receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    /// What a receiver records of one request, at the moment it arrives.
    fn capture(request: &HttpRequest, body: &[u8]) -> Self {
        Self {
            path: request.uri().to_string(),
            headers: request
                .headers()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                .collect(),
            body: body.to_vec(),
            at: Instant::now(),
        }
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).map(String::as_str).unwrap_or("")
    }
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("JSON body")
    }
}

/// How a receiver answers its n-th request (0-based).
#[derive(Clone, Copy, Debug)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            delay: Duration::ZERO,
        }
    }
    pub fn after(delay: Duration, status: u16) -> Self {
        Self { status, delay }
    }
}

type Behaviour = Arc<dyn Fn(usize) -> Reply + Send + Sync>;

/// A real HTTP server on a random port that records what it gets and answers as told.
pub struct Receiver {
    pub port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Mutex<Behaviour>>,
    server: actix_web::dev::ServerHandle,
}

impl Drop for Receiver {
    /// Stops the server so a finished test leaves no listener behind.
    fn drop(&mut self) {
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let server = self.server.clone();
            runtime.spawn(async move { server.stop(false).await });
        }
    }
}

impl Receiver {
    /// Answers 200 to everything.
    pub async fn start() -> Self {
        Self::answering(|_| Reply::status(200)).await
    }

    pub async fn answering(behaviour: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        Self::answering_on(0, behaviour).await
    }

    /// Answers 200 to everything, on `port` (0: any free one).
    pub async fn start_on(port: u16) -> Self {
        Self::answering_on(port, |_| Reply::status(200)).await
    }

    async fn answering_on(port: u16, behaviour: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let behaviour: Arc<Mutex<Behaviour>> = Arc::new(Mutex::new(Arc::new(behaviour)));
        let (r, b) = (received.clone(), behaviour.clone());
        let server = HttpServer::new(move || {
            let (r, b) = (r.clone(), b.clone());
            App::new().default_service(web::to(move |request: HttpRequest, body: web::Bytes| {
                let (r, b) = (r.clone(), b.clone());
                async move {
                    let reply = {
                        let mut received = r.lock().unwrap();
                        let n = received.len();
                        received.push(Received::capture(&request, &body));
                        let behaviour = b.lock().unwrap().clone();
                        behaviour(n)
                    };
                    if !reply.delay.is_zero() {
                        tokio::time::sleep(reply.delay).await;
                    }
                    HttpResponse::build(actix_web::http::StatusCode::from_u16(reply.status).unwrap())
                        .body("receiver says hi")
                }
            }))
        })
        .workers(2)
        .disable_signals()
        .bind(("127.0.0.1", port))
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            port,
            received,
            behaviour,
            server: handle,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Changes how it answers from now on.
    pub fn answer_with(&self, behaviour: impl Fn(usize) -> Reply + Send + Sync + 'static) {
        *self.behaviour.lock().unwrap() = Arc::new(behaviour);
    }

    pub fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    /// Waits until it has received at least `count` requests, and returns them.
    pub async fn wait_for(&self, count: usize, timeout: Duration) -> Vec<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            assert!(
                Instant::now() < deadline,
                "receiver got {} requests, expected {count}",
                received.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Asserts an error answer: this status and `{"error": {"code": code, "message": <text>}}`.
pub fn assert_error(status: u16, body: &Value, expected_status: u16, expected_code: &str, context: &str) {
    assert_eq!(status, expected_status, "{context}: {body}");
    assert_eq!(body["error"]["code"], expected_code, "{context}: {body}");
    let message = body["error"]["message"].as_str().unwrap_or("");
    assert!(!message.is_empty(), "{context}: the error has no message: {body}");
}

impl TestApp {
    /// Any request with a raw body and an optional `Authorization` header value
    /// (e.g. `Some("Bearer x")`); answers the status and the JSON body (null if none).
    pub async fn send_raw(
        &self,
        method: reqwest::Method,
        path: &str,
        authorization: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path));
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        if let Some(body) = body {
            request = request.header("content-type", "application/json").body(body.to_owned());
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }
}

/// A port on which nothing listens (bound once, then released): connections to it are refused.
/// Polls one metric series until `done` holds for its value.
pub async fn wait_for_metric(app: &TestApp, series: &str, done: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let value = app.metric(series).await;
        if done(value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{series} stayed at {value}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().unwrap().port()
}

impl Receiver {
    /// Like [`Receiver::answering`], but the n-th reply (0-based) also carries headers
    /// (`Location`, `Retry-After`). `answer_with` has no effect on such a receiver.
    pub async fn answering_with_headers(
        behaviour: impl Fn(usize) -> (u16, Vec<(&'static str, String)>) + Send + Sync + 'static,
    ) -> Self {
        let received: Arc<Mutex<Vec<Received>>> = Arc::default();
        let behaviour = Arc::new(behaviour);
        let r = received.clone();
        let server = HttpServer::new(move || {
            let (r, b) = (r.clone(), behaviour.clone());
            App::new().default_service(web::to(move |request: HttpRequest, body: web::Bytes| {
                let (r, b) = (r.clone(), b.clone());
                async move {
                    let (status, headers) = {
                        let mut received = r.lock().unwrap();
                        let n = received.len();
                        received.push(Received::capture(&request, &body));
                        b(n)
                    };
                    let mut response = HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap());
                    for (name, value) in headers {
                        response.insert_header((name, value));
                    }
                    response.body("receiver says hi")
                }
            }))
        })
        .workers(2)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        let ignored: Behaviour = Arc::new(|_| Reply::status(200));
        Self {
            port,
            received,
            behaviour: Arc::new(Mutex::new(ignored)),
            server: handle,
        }
    }
}

impl TestApp {
    /// Polls until the event's delivery to `endpoint_id` has `status`, and returns that delivery.
    pub async fn wait_for_delivery(
        &self,
        merchant: &str,
        event_id: &str,
        endpoint_id: &str,
        status: &str,
        timeout: Duration,
    ) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let event = self.event(merchant, event_id).await;
            let delivery = event["deliveries"]
                .as_array()
                .unwrap()
                .iter()
                .find(|d| d["endpoint_id"] == endpoint_id);
            if let Some(delivery) = delivery.filter(|d| d["status"] == status) {
                return delivery.clone();
            }
            assert!(
                Instant::now() < deadline,
                "delivery to {endpoint_id} never became {status}: {event:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every attempt made for the event, oldest first.
    pub async fn attempts(&self, merchant: &str, event_id: &str) -> Vec<Value> {
        let (status, body) = self
            .get(&format!(
                "/api/v1/merchants/{merchant}/events/{event_id}/attempts?limit=500"
            ))
            .await;
        assert_eq!(status, 200, "{body}");
        body["data"].as_array().expect("attempts data").clone()
    }
}

impl TestApp {
    /// Stops, then starts a new gateway on the same data directory with `overrides`
    /// instead of the ones it had (e.g. a setting that comes into force later).
    pub async fn restart_with(mut self, overrides: &[(&str, &str)]) -> TestApp {
        self.stop().await;
        let overrides = overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        start(self.data_dir.clone(), overrides).await
    }
}

impl TestApp {
    /// The endpoint's current signing secret, from `POST …/reveal-secret` (reads do not show it).
    pub async fn revealed_secret(&self, merchant: &str, endpoint_id: &str) -> Value {
        let (status, body) = self
            .post(
                &format!("/api/v1/merchants/{merchant}/endpoints/{endpoint_id}/reveal-secret"),
                json!({}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body["secret"].clone()
    }

    /// `{"ingest_token", "ingest_url"}` from `POST /api/v1/merchants/{merchant}/reveal-token`.
    pub async fn revealed_token(&self, merchant: &str) -> Value {
        let (status, body) = self
            .post(&format!("/api/v1/merchants/{merchant}/reveal-token"), json!({}))
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}
