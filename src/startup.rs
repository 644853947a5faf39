//! The application: settings in, a bound listener, THE route table, and the
//! dispatcher, run until the stop token fires.

use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::http::StatusCode;
use actix_web::middleware::from_fn;
use actix_web::{error::JsonPayloadError, web, App, HttpResponse, HttpServer};
use anyhow::Context as _;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, AdminAuth};
use crate::config::{Secret, Settings};
use crate::delivery::{DeliveryClient, EgressGuard};
use crate::dispatcher::{DispatchContext, Dispatcher, RetryPolicy};
use crate::error::ApiError;
use crate::health::{self, Readiness};
use crate::ingest::{self, IngestLimiter};
use crate::metrics::{self, Metrics};
use crate::store::{self, DiskGuard, Store};

/// How long a stop caused by a failed store waits for work under way.
const STORE_FAILURE_GRACE: Duration = Duration::from_secs(2);
/// How often the store's health is checked.
const STORE_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Longest wait at the end of a stop for the other store handles to be dropped.
const STORE_RELEASE_WAIT: Duration = Duration::from_secs(1);
/// Largest admin request body.
const ADMIN_BODY_LIMIT: usize = 64 * 1024;

/// Settings the HTTP handlers read.
pub struct AppConfig {
    /// Base URL of `ingest_url`, without trailing slash.
    pub public_url: String,
    pub max_payload_bytes: usize,
    pub max_endpoints_per_merchant: usize,
    /// An ingest body must arrive within this.
    pub ingest_read_timeout: Duration,
    /// Free-space watermark of the data directory.
    pub disk: DiskGuard,
    /// Per-merchant ingest rate limit.
    pub ingest_limiter: IngestLimiter,
    /// Checks endpoint URLs at registration; the delivery client holds a clone.
    pub egress: EgressGuard,
}

pub struct Application {
    port: u16,
    server: Server,
    dispatcher: Dispatcher,
    /// The retention loop; it holds a store handle until it ends.
    retention: tokio::task::JoinHandle<()>,
    store: Arc<dyn Store>,
    readiness: web::Data<Readiness>,
    admin_token: Secret,
    stop: CancellationToken,
    grace: Duration,
}

impl Application {
    /// Opens the store, binds the listener (port 0 picks a free one) and starts the
    /// dispatcher. Nothing is served until [`Application::run_until_stopped`].
    pub async fn build(settings: Settings, stop: CancellationToken) -> anyhow::Result<Self> {
        let store = store::open(&settings).await?;
        let admin_token = match &settings.admin_token {
            Some(token) => token.clone(),
            None => load_or_create_admin_token(&settings.data_dir)?,
        };
        let metrics = Arc::new(Metrics::new());
        let egress = EgressGuard::new(
            settings.egress.clone(),
            crate::delivery::egress::system_lookup(),
            settings.egress_proxy.as_ref().map(|proxy| proxy.expose().to_owned()),
            Some(metrics.egress_refused.clone()),
        );
        let client = DeliveryClient::with_egress(settings.delivery_timeout, egress.clone())
            .context("building the HTTP client")?;
        let ctx = DispatchContext {
            store: store.clone(),
            client,
            metrics: metrics.clone(),
            policy: RetryPolicy::new(settings.retry_initial, settings.retry_max, settings.retry_max_attempts),
        };
        let dispatcher = Dispatcher::new(
            ctx,
            settings.endpoint_concurrency,
            settings.delivery_concurrency,
            settings.delivery_timeout,
            stop.clone(),
        );
        dispatcher.start().await.context("starting the delivery workers")?;
        let retention = tokio::spawn(crate::retention::run_until_stopped(
            store.clone(),
            metrics.clone(),
            settings.retention,
            settings.purge_interval,
            stop.clone(),
        ));

        let listener = TcpListener::bind(settings.listen)
            .with_context(|| format!("binding HOOKRELAY_LISTEN={}", settings.listen))?;
        let port = listener.local_addr()?.port();
        let public_url = if settings.listen.port() == 0 {
            // Tests bind port 0: point ingest_url at the port actually taken.
            settings.public_url.replace(":0", &format!(":{port}"))
        } else {
            settings.public_url.clone()
        };
        if public_url.contains("://0.0.0.0") || public_url.contains("://[::]") {
            tracing::warn!(%public_url, "HOOKRELAY_PUBLIC_URL is unset and the listener is on all interfaces: ingest_url will not be reachable by providers; set HOOKRELAY_PUBLIC_URL");
        }
        let readiness = web::Data::new(Readiness::default());
        let app_config = web::Data::new(AppConfig {
            public_url,
            max_payload_bytes: settings.max_payload_bytes,
            max_endpoints_per_merchant: settings.max_endpoints_per_merchant,
            ingest_read_timeout: settings.ingest_read_timeout,
            disk: DiskGuard::new(settings.data_dir.clone(), settings.min_free_disk_bytes),
            ingest_limiter: IngestLimiter::new(
                settings.ingest_rate_per_second,
                settings.ingest_burst,
                Some(metrics.ingest_rate_limited.clone()),
            ),
            egress,
        });
        let store_data: web::Data<dyn Store> = web::Data::from(store.clone());
        let metrics_data = web::Data::from(metrics);
        let dispatcher_data = web::Data::new(dispatcher.clone());
        let auth = web::Data::new(AdminAuth::new(admin_token.clone()));
        let readiness_data = readiness.clone();
        let server =
            HttpServer::new(move || {
                App::new()
                    .wrap(tracing_actix_web::TracingLogger::<crate::telemetry::RedactedRootSpan>::new())
                    .app_data(store_data.clone())
                    .app_data(metrics_data.clone())
                    .app_data(dispatcher_data.clone())
                    .app_data(app_config.clone())
                    .app_data(auth.clone())
                    .app_data(readiness_data.clone())
                    .app_data(json_config())
                    .app_data(web::QueryConfig::default().error_handler(|e, _| {
                        ApiError::bad_request("invalid_query", format!("invalid query string: {e}")).into()
                    }))
                    .app_data(web::PathConfig::default().error_handler(|e, _| {
                        ApiError::bad_request("invalid_path", format!("invalid path: {e}")).into()
                    }))
                    .service(resource("/ingest/{merchant_id}").route(web::post().to(ingest::ingest_event)))
                    .service(resource("/healthz").route(web::get().to(health::healthz)))
                    .service(resource("/readyz").route(web::get().to(health::readyz)))
                    .service(resource("/metrics").route(web::get().to(metrics::serve_metrics)))
                    .service(
                        web::scope("/api/v1")
                            .wrap(from_fn(admin::require_admin))
                            .configure(admin::routes),
                    )
                    .default_service(web::to(no_route))
            })
            .listen(listener)?
            .disable_signals()
            .client_request_timeout(settings.ingest_read_timeout)
            // Per worker thread: the listener holds at most this × workers (one per CPU).
            .max_connections(settings.max_connections)
            .shutdown_timeout(settings.shutdown_grace.as_secs().max(1))
            .run();

        readiness.set(true);
        Ok(Self {
            port,
            server,
            dispatcher,
            retention,
            store,
            readiness,
            admin_token,
            stop,
            grace: settings.shutdown_grace,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The admin bearer token in force (given, or generated into the data directory).
    pub fn admin_token(&self) -> &str {
        self.admin_token.expose()
    }

    /// Serves until the stop token fires, then: readiness off and ingest refused with
    /// 503 while attempts under way finish within the grace period; then the HTTP
    /// server stops (requests under way complete) and the store is synced and closed.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let handle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        let mut watchdog = tokio::time::interval(STORE_CHECK_EVERY);
        let mut store_failure = None;
        loop {
            tokio::select! {
                _ = self.stop.cancelled() => break,
                result = &mut server => {
                    self.stop.cancel();
                    result.context("the HTTP server task failed")?.context("the HTTP server stopped")?;
                    break;
                }
                _ = watchdog.tick() => {
                    if let Some(failure) = self.store.failure() {
                        // A store that cannot make writes durable must not keep answering:
                        // stop, and let the supervisor restart us once the cause is fixed.
                        tracing::error!(%failure, "the store failed; stopping");
                        store_failure = Some(failure);
                        self.stop.cancel();
                        break;
                    }
                }
            }
        }
        self.readiness.set(false);
        // With a failed store, attempts and requests under way cannot finish properly:
        // do not give them the grace period, the supervisor should restart us soon.
        let grace = if store_failure.is_some() {
            STORE_FAILURE_GRACE
        } else {
            self.grace
        };
        let drained = self.dispatcher.drain(grace).await;
        handle.stop(store_failure.is_none()).await;
        if !drained {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "attempts still running at the end of the grace period; they will be retried after restart"
            );
        }
        // The server task owns the app factories and their store handles; the
        // retention loop holds one too. A failed store may leave either stuck.
        let _ = tokio::time::timeout(grace, async {
            if !server.is_finished() {
                let _ = server.await;
            }
            let _ = self.retention.await;
        })
        .await;
        let closed = tokio::time::timeout(grace, self.store.close()).await;
        // actix's worker threads drop their app data, store handles included, just after
        // the server reports them stopped, and the dispatcher holds one too. The data
        // directory is free only once the last handle is gone (sled holds its lock until
        // then), and a start in the same process, as after a restart, must find it free.
        drop(self.dispatcher);
        let released = tokio::time::timeout(STORE_RELEASE_WAIT, async {
            while Arc::strong_count(&self.store) > 1 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        if released.is_err() {
            tracing::warn!("store handles were still held at the end of the stop");
        }
        if let Some(failure) = store_failure {
            anyhow::bail!("the store failed and cannot promise durability: {failure}");
        }
        closed
            .map_err(|_| anyhow::anyhow!("closing the store did not finish within the grace period"))?
            .context("closing the store at shutdown")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Reads `<data dir>/admin_token`, creating it (mode 0600) with a random token on first start.
fn load_or_create_admin_token(data_dir: &Path) -> anyhow::Result<Secret> {
    use std::io::Write as _;

    let path = data_dir.join("admin_token");
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => {
            tracing::info!(path = %path.display(), "admin token read from file");
            return Ok(Secret::new(token.trim()));
        }
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading the admin token from {}", path.display())),
    }
    std::fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let token = crate::domain::IngestToken::generate()
        .expose()
        .replacen("whk_", "hra_", 1);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    file.write_all(token.as_bytes())
        .and_then(|_| file.sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    tracing::info!(path = %path.display(), "generated an admin token (HOOKRELAY_ADMIN_TOKEN was unset); read it from this file");
    Ok(Secret::new(token))
}

fn json_config() -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(ADMIN_BODY_LIMIT)
        .content_type_required(false)
        .error_handler(|e, _| json_error(e).into())
}

fn json_error(error: JsonPayloadError) -> ApiError {
    match error {
        JsonPayloadError::Deserialize(e) => serde_error(e),
        JsonPayloadError::OverflowKnownLength { .. } | JsonPayloadError::Overflow { .. } => ApiError::client(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("admin request bodies are limited to {ADMIN_BODY_LIMIT} bytes"),
        ),
        other => ApiError::bad_request("invalid_json", other.to_string()),
    }
}

pub(crate) fn serde_error(error: serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    match error.classify() {
        Category::Data => ApiError::unprocessable("validation_error", error.to_string()),
        _ => ApiError::bad_request("invalid_json", format!("the body is not valid JSON: {error}")),
    }
}

/// Parses an optional JSON body: empty means the type's default.
/// Parses an optional JSON object body: empty or `null` means the type's default.
pub fn optional_json<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    let text = body.trim_ascii();
    if text.is_empty() || text == b"null" {
        return Ok(T::default());
    }
    crate::extract::parse_object(text)
}

/// A route whose other methods answer 405 with the JSON error shape.
pub fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(method_not_allowed))
}

/// 405 with the `Allow` header RFC 9110 asks for, taken from the OpenAPI document
/// so it names exactly the methods documented for the route.
async fn method_not_allowed(request: actix_web::HttpRequest) -> HttpResponse {
    static ALLOWED: std::sync::OnceLock<std::collections::HashMap<String, String>> = std::sync::OnceLock::new();
    let allowed = ALLOWED.get_or_init(|| {
        use utoipa::OpenApi as _;
        admin::ApiDoc::openapi()
            .paths
            .paths
            .iter()
            .map(|(path, item)| {
                let methods = [
                    ("GET", item.get.is_some()),
                    ("POST", item.post.is_some()),
                    ("PUT", item.put.is_some()),
                    ("PATCH", item.patch.is_some()),
                    ("DELETE", item.delete.is_some()),
                ];
                let list: Vec<&str> = methods.iter().filter(|(_, on)| *on).map(|(m, _)| *m).collect();
                (path.clone(), list.join(", "))
            })
            .collect()
    });
    let error = ApiError::client(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method",
    );
    let mut response = actix_web::ResponseError::error_response(&error);
    if let Some(methods) = request.match_pattern().and_then(|pattern| allowed.get(&pattern)) {
        if let Ok(value) = actix_web::http::header::HeaderValue::from_str(methods) {
            response.headers_mut().insert(actix_web::http::header::ALLOW, value);
        }
    }
    response
}

async fn no_route() -> Result<HttpResponse, ApiError> {
    Err(ApiError::client(StatusCode::NOT_FOUND, "not_found", "no such route"))
}
