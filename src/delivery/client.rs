//! The outbound HTTP client and the classification of an attempt's result.

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, RETRY_AFTER};

use super::egress::{EgressGuard, EgressRefused};
use super::signature_header;
use crate::domain::{AttemptOutcome, Endpoint, EventId};

/// Most of a response body we read, to show it in `last_error` and to let the
/// connection be reused; anything larger is cut off.
const MAX_BODY_PREFIX: usize = 4096;
/// A request whose connection closed unanswered sooner than this is sent once more.
const RESEND_WITHIN: Duration = Duration::from_secs(1);
/// Most of a body shown in `last_error`.
const MAX_ERROR_BODY: usize = 256;

/// What one attempt found.
#[derive(Debug, Clone)]
pub struct AttemptReport {
    pub outcome: AttemptOutcome,
    pub status_code: Option<u16>,
    /// Human-readable cause of a failure.
    pub error: Option<String>,
    pub duration: Duration,
    /// A `Retry-After` the receiver asked for (429 / 503), as a delay.
    pub retry_after: Option<Duration>,
}

/// An endpoint ready for attempts: its URL parsed and checked against the egress policy
/// once, when the endpoint was read, not at every attempt. The addresses a name resolves
/// to are still checked at each connection. Made by [`DeliveryClient::destination`].
#[derive(Debug)]
pub struct Destination {
    pub endpoint: Endpoint,
    url: Result<reqwest::Url, EgressRefused>,
}

/// Sends deliveries. Cheap to clone; one connection pool for all endpoints.
#[derive(Clone)]
pub struct DeliveryClient {
    http: reqwest::Client,
    /// Checked before each attempt; without a proxy its resolver is the client's.
    egress: EgressGuard,
}

impl DeliveryClient {
    /// A client under the default egress policy.
    pub fn new(timeout: Duration) -> reqwest::Result<Self> {
        Self::with_egress(timeout, EgressGuard::default())
    }

    /// A client under `egress`: names resolve through its [`PolicyResolver`](super::egress::PolicyResolver),
    /// or, with `HOOKRELAY_EGRESS_PROXY`, everything goes through the proxy (which
    /// resolves names itself; the operator chose it, so its own address is not checked).
    pub fn with_egress(timeout: Duration, egress: EgressGuard) -> reqwest::Result<Self> {
        let builder = reqwest::Client::builder()
            .user_agent(concat!("hookrelay/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .timeout(timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true);
        let builder = match egress.proxy() {
            Some(proxy) => builder.proxy(reqwest::Proxy::all(proxy)?),
            None => builder.no_proxy().dns_resolver(egress.resolver()),
        };
        Ok(Self {
            http: builder.build()?,
            egress,
        })
    }

    /// Checks `endpoint`'s URL for its attempts. IP-literal URLs never reach the
    /// resolver: the check of them (and of the scheme) is this one.
    pub fn destination(&self, endpoint: Endpoint) -> Destination {
        let url = self.egress.check_delivery_url(endpoint.url.as_str());
        Destination { endpoint, url }
    }

    /// Makes one attempt; never fails, every failure is a classified report.
    pub async fn send(
        &self,
        destination: &Destination,
        event_id: &EventId,
        payload: Bytes,
        now_unix_s: i64,
    ) -> AttemptReport {
        let endpoint = &destination.endpoint;
        let url = match &destination.url {
            Ok(url) => url,
            Err(refused) => {
                self.egress.count_refused_attempt();
                return report(AttemptOutcome::ConnectError, None, Some(refused.to_string()), None);
            }
        };
        let signature = signature_header(
            endpoint.signing_secrets(now_unix_s.saturating_mul(1000)),
            event_id.as_str(),
            now_unix_s,
            &payload,
        );
        let mut headers = HeaderMap::with_capacity(4);
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert("webhook-id", header_value(event_id.as_str()));
        headers.insert("webhook-timestamp", HeaderValue::from(now_unix_s));
        headers.insert("webhook-signature", header_value(&signature));

        let started = Instant::now();
        let post = || {
            self.http
                .post(url.clone())
                .headers(headers.clone())
                .body(payload.clone())
                .send()
        };
        let result = match post().await {
            // A pooled connection the receiver closed just as we reused it (its keep-alive
            // ran out): once more, on a new connection. That race fails at once; a close
            // after a longer wait is the receiver's answer and stays a failed attempt, which
            // also keeps the attempt within its lease. Receivers deduplicate by
            // `webhook-id` in the rare case the first copy was read after all.
            Err(error) if closed_before_answer(&error) && started.elapsed() < RESEND_WITHIN => post().await,
            other => other,
        };
        let report = match result {
            Ok(response) => classify_response(response).await,
            Err(error) => classify_error(&error),
        };
        AttemptReport {
            duration: started.elapsed(),
            ..report
        }
    }
}

async fn classify_response(mut response: reqwest::Response) -> AttemptReport {
    let status = response.status();
    let retry_after = response.headers().get(RETRY_AFTER).and_then(parse_retry_after);
    let mut body = Vec::new();
    let mut body_error = None;
    while body.len() < MAX_BODY_PREFIX {
        match response.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk[..chunk.len().min(MAX_BODY_PREFIX - body.len())]),
            Ok(None) => break,
            Err(e) => {
                body_error = Some(e);
                break;
            }
        }
    }
    if status.is_success() {
        // The receiver said yes; a body cut short afterwards does not change that.
        return report(AttemptOutcome::Success, Some(status.as_u16()), None, None);
    }
    let mut error = format!("HTTP {}", status.as_u16());
    if status.is_redirection() {
        if let Some(location) = response.headers().get("location").and_then(|l| l.to_str().ok()) {
            error.push_str(&format!(" redirect to {location} (not followed)"));
        }
    }
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX_ERROR_BODY)]);
    let text = text.trim();
    if !text.is_empty() {
        error.push_str(": ");
        error.push_str(text);
    }
    if let Some(e) = body_error {
        error.push_str(&format!(" (reading the body failed: {})", describe(&e)));
    }
    let retry_after = retry_after.filter(|_| matches!(status.as_u16(), 429 | 503));
    report(
        AttemptOutcome::HttpError,
        Some(status.as_u16()),
        Some(error),
        retry_after,
    )
}

fn report(
    outcome: AttemptOutcome,
    status_code: Option<u16>,
    error: Option<String>,
    retry_after: Option<Duration>,
) -> AttemptReport {
    AttemptReport {
        outcome,
        status_code,
        error,
        duration: Duration::ZERO,
        retry_after,
    }
}

fn classify_error(error: &reqwest::Error) -> AttemptReport {
    let outcome = if error.is_timeout() {
        AttemptOutcome::Timeout
    } else {
        AttemptOutcome::ConnectError
    };
    report(outcome, None, Some(describe(error)), None)
}

/// Whether the connection closed after the request went out and before any answer came:
/// hyper's "connection closed before message completed".
fn closed_before_answer(error: &reqwest::Error) -> bool {
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        if cause
            .downcast_ref::<hyper::Error>()
            .is_some_and(hyper::Error::is_incomplete_message)
        {
            return true;
        }
        source = cause.source();
    }
    false
}

/// The error with its causes, which reqwest keeps in the source chain.
fn describe(error: &reqwest::Error) -> String {
    let mut text = if error.is_timeout() {
        "timed out".to_owned()
    } else if error.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).expect("ids and signatures are visible ASCII")
}

/// `Retry-After` in seconds (the HTTP-date form is rare for webhooks and ignored).
fn parse_retry_after(value: &HeaderValue) -> Option<Duration> {
    value.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use prometheus::{IntCounterVec, Opts};

    use super::*;
    use crate::delivery::egress::{system_lookup, EgressPolicy, TargetList};
    use crate::domain::{EndpointId, EndpointSecret, EndpointUrl, EventTypeFilter, MerchantId};

    fn endpoint(url: &str) -> Endpoint {
        Endpoint {
            id: EndpointId::generate(),
            merchant_id: MerchantId::parse("acme").unwrap(),
            url: EndpointUrl::parse(url).unwrap(),
            event_types: EventTypeFilter::default(),
            description: None,
            secret: EndpointSecret::generate(),
            retired_secrets: Vec::new(),
            enabled: true,
            created_at: 1,
            updated_at: 1,
        }
    }

    #[tokio::test]
    async fn a_url_refused_when_its_destination_was_made_is_refused_and_counted_at_every_attempt() {
        let refused = IntCounterVec::new(Opts::new("refused", "refused"), &["stage"]).unwrap();
        let deny = TargetList::parse("127.0.0.0/8").unwrap();
        let guard = EgressGuard::new(
            EgressPolicy::new(None, deny, false),
            system_lookup(),
            None,
            Some(refused.clone()),
        );
        let client = DeliveryClient::with_egress(Duration::from_secs(1), guard).unwrap();
        let destination = client.destination(endpoint("http://127.0.0.1:9/hook"));
        let event = EventId::generate();
        for attempt in 1..=2 {
            let report = client.send(&destination, &event, Bytes::from_static(b"{}"), 0).await;
            assert_eq!(report.outcome, AttemptOutcome::ConnectError);
            let error = report.error.unwrap_or_default();
            assert!(error.starts_with("egress policy refused 127.0.0.1"), "{error}");
            assert_eq!(refused.with_label_values(&["delivery"]).get(), attempt);
        }
    }

    #[test]
    fn an_allowed_url_is_kept_parsed_with_its_endpoint() {
        let client = DeliveryClient::new(Duration::from_secs(1)).unwrap();
        let destination = client.destination(endpoint("http://hooks.example:8080/a/b?token=x"));
        let url = destination.url.as_ref().expect("allowed by the default policy");
        assert_eq!(url.as_str(), "http://hooks.example:8080/a/b?token=x");
        assert_eq!(destination.endpoint.url.as_str(), url.as_str());
    }
}
