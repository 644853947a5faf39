//! The capturing sink: a fast HTTP receiver on loopback that answers every POST with
//! 200 and an empty body, and records when each delivery arrived, keyed by
//! `webhook-id` and path (`/hook/{endpoint index}`).

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use anyhow::Context as _;

use crate::stats::{id_digest, Clock};

/// Path prefix of every sink URL; the endpoint index follows.
pub const HOOK_PREFIX: &str = "/hook/";

/// Endpoint index recorded for a path that is not `/hook/{n}`.
pub const UNKNOWN_ENDPOINT: u32 = u32::MAX;

/// One request received.
#[derive(Clone, Copy, Debug)]
pub struct Arrival {
    /// [`id_digest`] of the `webhook-id` header (0 when absent).
    pub id: u64,
    pub endpoint: u32,
    pub at_ns: u64,
}

/// What the handlers share: the clock and the record of arrivals.
pub struct Recorder {
    clock: Clock,
    arrivals: Mutex<Vec<Arrival>>,
    /// Requests received since start, for progress and the sampler.
    count: AtomicU64,
}

impl Recorder {
    pub fn new(clock: Clock) -> Arc<Self> {
        Arc::new(Self {
            clock,
            arrivals: Mutex::new(Vec::new()),
            count: AtomicU64::new(0),
        })
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Takes the arrivals recorded so far, leaving the record empty (the count goes on).
    pub fn take(&self) -> Vec<Arrival> {
        std::mem::take(&mut *self.arrivals.lock().expect("sink record poisoned"))
    }

    fn record(&self, arrival: Arrival) {
        self.arrivals.lock().expect("sink record poisoned").push(arrival);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// A running sink. [`Sink::stop`] ends it; dropping it without stopping leaves actix to
/// stop its workers when the runtime ends.
pub struct Sink {
    pub addr: SocketAddr,
    handle: ServerHandle,
}

impl Sink {
    /// Starts the sink on `127.0.0.1:port` (0: any free port) with `workers` threads.
    pub fn start(port: u16, workers: usize, recorder: Arc<Recorder>) -> anyhow::Result<Self> {
        let listener =
            TcpListener::bind(("127.0.0.1", port)).with_context(|| format!("bind the sink to port {port}"))?;
        let addr = listener.local_addr().context("sink address")?;
        let data = web::Data::from(recorder);
        let server = HttpServer::new(move || App::new().app_data(data.clone()).default_service(web::to(receive)))
            .workers(workers)
            .backlog(4096)
            .disable_signals()
            .shutdown_timeout(1)
            .listen(listener)
            .context("start the sink")?
            .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(Self { addr, handle })
    }

    pub fn url(&self, endpoint: u32) -> String {
        format!("http://{}{HOOK_PREFIX}{endpoint}", self.addr)
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

/// Every request: record it, answer 200 with an empty body. The body is read (so the
/// connection stays usable) but not parsed.
async fn receive(request: HttpRequest, _body: web::Bytes, recorder: web::Data<Recorder>) -> HttpResponse {
    let at_ns = recorder.clock.now_ns();
    let id = request
        .headers()
        .get("webhook-id")
        .map(|value| id_digest(value.as_bytes()))
        .unwrap_or(0);
    let endpoint = request
        .path()
        .strip_prefix(HOOK_PREFIX)
        .and_then(|rest| rest.parse().ok())
        .unwrap_or(UNKNOWN_ENDPOINT);
    recorder.record(Arrival { id, endpoint, at_ns });
    HttpResponse::Ok().finish()
}

/// A port that was free a moment ago, for a sink started later (backlog mode points
/// endpoints at it while nothing listens).
pub fn reserve_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(listener.local_addr().context("free port")?.port())
}
