//! hookrelay-floor: a stand-in for the gateway that does the same HTTP work with no
//! store at all, to measure what that work alone costs on this machine
//! (`hookrelay-bench --floor`, docs/benchmarks.md).
//!
//! The bench starts it with the settings it gives a gateway. It answers the few admin
//! calls the bench makes, and on each ingest reads and parses the body with hookrelay's
//! own ingest code, puts the event on an in-memory queue per matching endpoint and
//! answers 202. One worker per endpoint, as in the gateway's dispatcher, keeps up to
//! `HOOKRELAY_ENDPOINT_CONCURRENCY` attempts in flight (within
//! `HOOKRELAY_DELIVERY_CONCURRENCY` in all) and makes each with hookrelay's own signing
//! delivery client. Nothing is written anywhere, nothing is retried: a failed delivery is
//! counted and logged, and the bench reports it missing. So the floor is a bound, not a
//! product: whatever the gateway does beyond it (the store, its fsyncs, the claims and
//! the records) is what the gateway costs over it.

use std::collections::{HashMap, VecDeque};
use std::process::ExitCode;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context as _;
use bytes::Bytes;
use hookrelay::delivery::{DeliveryClient, Destination};
use hookrelay::domain::{
    now_ms, AttemptOutcome, Endpoint, EndpointId, EndpointSecret, EndpointUrl, EventId, EventTypeFilter, MerchantId,
};
use hookrelay::error::ApiError;
use hookrelay::ingest::{parse_event, presented_token, read_body};
use serde::Deserialize;
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

const HELP: &str = "hookrelay-floor: the gateway's HTTP work with no store, for `hookrelay-bench --floor`.
Takes no arguments. Settings: HOOKRELAY_LISTEN (127.0.0.1:8080), HOOKRELAY_ADMIN_TOKEN (required),
HOOKRELAY_ENDPOINT_CONCURRENCY (16), HOOKRELAY_DELIVERY_CONCURRENCY (512).";

/// Largest ingest body, as the gateway's default.
const MAX_BODY: usize = 256 * 1024;
/// Timeout of one delivery, as the gateway's default.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

// The gateway's allocator and its settings, so that the two compare.
hookrelay::use_jemalloc!();

/// Runs until SIGTERM or SIGINT; settings from the environment.
fn main() -> ExitCode {
    if let Some(arg) = std::env::args().nth(1) {
        println!("{HELP}");
        return if arg == "--help" || arg == "-h" {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        };
    }
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("hookrelay-floor: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn setting<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={value:?} is not valid")),
        Err(_) => Ok(default),
    }
}

fn run() -> anyhow::Result<()> {
    let listen: std::net::SocketAddr = setting("HOOKRELAY_LISTEN", ([127, 0, 0, 1], 8080).into())?;
    let admin_token = std::env::var("HOOKRELAY_ADMIN_TOKEN").context("HOOKRELAY_ADMIN_TOKEN is not set")?;
    let per_endpoint = setting("HOOKRELAY_ENDPOINT_CONCURRENCY", 16usize)?;
    let in_all = setting("HOOKRELAY_DELIVERY_CONCURRENCY", 512usize)?;
    // One multi-threaded runtime for the deliveries and actix's own workers for HTTP,
    // the gateway's layout.
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let relay = web::Data::new(Relay {
            admin_token,
            per_endpoint,
            merchants: RwLock::default(),
            client: DeliveryClient::new(DELIVERY_TIMEOUT).context("building the HTTP client")?,
            deliveries: tokio::runtime::Handle::current(),
            in_all: Arc::new(Semaphore::new(in_all)),
            pending: AtomicI64::new(0),
            failed: AtomicU64::new(0),
        });
        HttpServer::new(move || {
            App::new()
                .app_data(relay.clone())
                .route("/readyz", web::get().to(HttpResponse::Ok))
                .route("/metrics", web::get().to(metrics))
                .route("/ingest/{merchant_id}", web::post().to(ingest))
                .route("/api/v1/merchants", web::post().to(create_merchant))
                .route(
                    "/api/v1/merchants/{merchant_id}/endpoints",
                    web::post().to(create_endpoint),
                )
        })
        .bind(listen)
        .with_context(|| format!("bind {listen}"))?
        .run()
        .await
        .context("serve")
    })
}

/// What the handlers share.
struct Relay {
    admin_token: String,
    per_endpoint: usize,
    merchants: RwLock<HashMap<String, Arc<Merchant>>>,
    client: DeliveryClient,
    /// Where deliveries run (not on actix's workers).
    deliveries: tokio::runtime::Handle,
    in_all: Arc<Semaphore>,
    /// Deliveries accepted and not yet finished: `hookrelay_queue_depth`.
    pending: AtomicI64,
    failed: AtomicU64,
}

struct Merchant {
    ingest_token: String,
    targets: Vec<Arc<Target>>,
}

/// An endpoint (its URL checked, as the gateway's dispatcher does) with its queue; its
/// worker waits on `signal`.
struct Target {
    destination: Destination,
    queue: Mutex<VecDeque<(EventId, Bytes)>>,
    signal: Notify,
}

impl Relay {
    fn authorized(&self, request: &HttpRequest) -> Result<(), ApiError> {
        let presented = hookrelay::extract::bearer_token(request);
        if presented == Some(self.admin_token.as_str()) {
            Ok(())
        } else {
            Err(ApiError::client(
                actix_web::http::StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the floor wants its admin token",
            ))
        }
    }
}

async fn metrics(relay: web::Data<Relay>) -> HttpResponse {
    let text = format!(
        "hookrelay_queue_depth {}\nhookrelay_floor_failed_deliveries_total {}\n",
        relay.pending.load(Ordering::Relaxed),
        relay.failed.load(Ordering::Relaxed)
    );
    HttpResponse::Ok().content_type("text/plain; version=0.0.4").body(text)
}

#[derive(Deserialize)]
struct NewMerchant {
    id: String,
}

async fn create_merchant(
    request: HttpRequest,
    body: web::Json<NewMerchant>,
    relay: web::Data<Relay>,
) -> Result<HttpResponse, ApiError> {
    relay.authorized(&request)?;
    MerchantId::parse(&body.id).map_err(|e| ApiError::bad_request("invalid_merchant_id", e))?;
    let ingest_token = uuid::Uuid::new_v4().simple().to_string();
    let merchant = Merchant {
        ingest_token: ingest_token.clone(),
        targets: Vec::new(),
    };
    relay
        .merchants
        .write()
        .expect("merchant table poisoned")
        .insert(body.id.clone(), Arc::new(merchant));
    Ok(HttpResponse::Created().json(serde_json::json!({ "id": body.id, "ingest_token": ingest_token })))
}

#[derive(Deserialize)]
struct NewEndpoint {
    url: String,
    #[serde(default)]
    event_types: Vec<String>,
}

async fn create_endpoint(
    request: HttpRequest,
    path: web::Path<String>,
    body: web::Json<NewEndpoint>,
    relay: web::Data<Relay>,
) -> Result<HttpResponse, ApiError> {
    relay.authorized(&request)?;
    let merchant_id = MerchantId::parse(&path).map_err(|e| ApiError::bad_request("invalid_merchant_id", e))?;
    let body = body.into_inner();
    let now = now_ms();
    let endpoint = Endpoint {
        id: EndpointId::generate(),
        merchant_id,
        url: EndpointUrl::parse(&body.url).map_err(|e| ApiError::bad_request("invalid_url", e))?,
        event_types: EventTypeFilter::parse(body.event_types)
            .map_err(|e| ApiError::bad_request("invalid_event_types", e))?,
        description: None,
        secret: EndpointSecret::generate(),
        retired_secrets: Vec::new(),
        enabled: true,
        created_at: now,
        updated_at: now,
    };
    let id = endpoint.id.as_str().to_owned();
    let mut merchants = relay.merchants.write().expect("merchant table poisoned");
    let Some(merchant) = merchants.get_mut(path.as_str()) else {
        return Err(ApiError::not_found("merchant"));
    };
    let target = Arc::new(Target {
        destination: relay.client.destination(endpoint),
        queue: Mutex::default(),
        signal: Notify::new(),
    });
    relay.deliveries.spawn(work(relay.clone().into_inner(), target.clone()));
    let mut targets = merchant.targets.clone();
    targets.push(target);
    *merchant = Arc::new(Merchant {
        ingest_token: merchant.ingest_token.clone(),
        targets,
    });
    Ok(HttpResponse::Created().json(serde_json::json!({ "id": id })))
}

/// `POST /ingest/{merchant_id}?token=`: the gateway's body checks, then the deliveries
/// start and the answer goes out; nothing is stored.
async fn ingest(
    request: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    relay: web::Data<Relay>,
) -> Result<HttpResponse, ApiError> {
    let merchant = relay
        .merchants
        .read()
        .expect("merchant table poisoned")
        .get(path.as_str())
        .cloned()
        .ok_or_else(|| ApiError::not_found("merchant"))?;
    if presented_token(&request).as_deref() != Some(merchant.ingest_token.as_str()) {
        return Err(ApiError::client(
            actix_web::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong ingest token",
        ));
    }
    let body = read_body(&request, payload, MAX_BODY).await?;
    let fields = parse_event(&body, None)?;
    let event_id = EventId::generate();
    let mut started = 0;
    for target in &merchant.targets {
        if !target
            .destination
            .endpoint
            .event_types
            .matches(fields.event_type.as_deref())
        {
            continue;
        }
        started += 1;
        relay.pending.fetch_add(1, Ordering::Relaxed);
        target
            .queue
            .lock()
            .expect("queue poisoned")
            .push_back((event_id.clone(), body.clone()));
        target.signal.notify_one();
    }
    Ok(HttpResponse::Accepted().json(serde_json::json!({
        "event_id": event_id,
        "status": "queued",
        "deliveries": started,
    })))
}

/// An endpoint's worker: starts queued deliveries while it has free slots, then waits
/// for a new one or for one in flight to end. Runs until the process ends.
async fn work(relay: Arc<Relay>, target: Arc<Target>) {
    let mut in_flight = JoinSet::new();
    loop {
        while in_flight.len() < relay.per_endpoint {
            let Some((event_id, payload)) = target.queue.lock().expect("queue poisoned").pop_front() else {
                break;
            };
            let permit = relay.in_all.clone().acquire_owned().await.expect("never closed");
            let (relay, target) = (relay.clone(), target.clone());
            in_flight.spawn(async move {
                deliver(&relay, &target.destination, &event_id, payload).await;
                drop(permit);
            });
        }
        tokio::select! {
            () = target.signal.notified() => {}
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    }
}

/// One delivery, once.
async fn deliver(relay: &Relay, destination: &Destination, event_id: &EventId, payload: Bytes) {
    let report = relay.client.send(destination, event_id, payload, now_ms() / 1000).await;
    if report.outcome != AttemptOutcome::Success {
        relay.failed.fetch_add(1, Ordering::Relaxed);
        eprintln!(
            "hookrelay-floor: delivery of {} failed: {:?}",
            event_id.as_str(),
            report.error
        );
    }
    relay.pending.fetch_sub(1, Ordering::Relaxed);
}
