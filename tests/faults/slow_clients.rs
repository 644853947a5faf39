//! Slow clients on ingest: headers trickling in one byte per second (slow-loris) and
//! bodies trickling in. The read timeout cuts them off, and while hundreds of them
//! hang on, normal ingests keep answering fast.

use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::gateway::{Gateway, GatewayProcess};
use crate::net::{read_some, write_all};
use crate::report::{pick, Row};
use crate::support;

const READ_TIMEOUT_MS: u64 = 2000;
/// How long a slow client may stay connected past the read timeout.
const CUT_SLACK_MS: u64 = 1500;
/// Normal ingests while the slow clients hang on: 90% within, and the slowest within
/// (a margin for a loaded machine; a tied-up gateway takes the whole read timeout).
const FAST_P90_MS: f64 = 250.0;
const FAST_MAX_MS: f64 = 750.0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slowness {
    /// The request head arrives one byte per second.
    Headers,
    /// The head arrives whole; the body one byte per second.
    Body,
}

/// What one slow client saw.
struct Cut {
    /// From connecting until the server closed the connection; `None`: still open at the end.
    after: Option<Duration>,
    /// From connecting until the first byte of an answer, if one came.
    answered_after: Option<Duration>,
    /// The first line of whatever the server answered (plus `request_timeout` if the body named it).
    answer: String,
}

/// A slow client: sends `head` (and `body`) at one byte per second, while watching for
/// the server to answer or close. Gives up after `give_up`.
async fn slow_client(port: u16, head: String, body: Vec<u8>, slowness: Slowness, give_up: Duration) -> Cut {
    let started = Instant::now();
    let Ok(stream) = TcpStream::connect(("127.0.0.1", port)).await else {
        return Cut {
            after: Some(Duration::ZERO),
            answered_after: None,
            answer: "connect refused".to_owned(),
        };
    };
    let answered_after: std::sync::Mutex<Option<Duration>> = std::sync::Mutex::new(None);
    let reader = async {
        let mut answer = Vec::new();
        let mut buf = vec![0u8; 4096];
        loop {
            match read_some(&stream, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if answer.is_empty() {
                        *answered_after.lock().unwrap() = Some(started.elapsed());
                    }
                    answer.extend_from_slice(&buf[..n]);
                }
            }
        }
        String::from_utf8_lossy(&answer).into_owned()
    };
    let writer = async {
        let (fast, slow) = match slowness {
            Slowness::Headers => (Vec::new(), [head.into_bytes(), body].concat()),
            Slowness::Body => (head.into_bytes(), body),
        };
        if write_all(&stream, &fast).await.is_ok() {
            for byte in slow {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if write_all(&stream, &[byte]).await.is_err() {
                    break;
                }
            }
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        answer = reader => {
            let mut first_line = answer.lines().next().unwrap_or("").to_owned();
            if answer.contains("request_timeout") {
                first_line.push_str(" request_timeout");
            }
            Cut { after: Some(started.elapsed()), answered_after: *answered_after.lock().unwrap(), answer: first_line }
        }
        _ = writer => unreachable!(),
        _ = tokio::time::sleep(give_up) => Cut { after: None, answered_after: *answered_after.lock().unwrap(), answer: String::new() },
    }
}

/// Times `count` normal ingests, one every 50 ms; returns their latencies in ms.
async fn normal_ingests(process: &GatewayProcess, ingest_url: &str, count: usize) -> (Vec<f64>, Vec<u16>) {
    let mut latencies = Vec::new();
    let mut statuses = Vec::new();
    for n in 0..count {
        let started = Instant::now();
        let status = match process
            .ingest(ingest_url, &support::event_body(&format!("normal-{n}"), None, 100))
            .await
        {
            Ok((status, _)) => status,
            Err(_) => 0,
        };
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        statuses.push(status);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (latencies, statuses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_headers_are_cut_off_while_normal_ingests_stay_fast() {
    slow_clients(Slowness::Headers).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickling_body_gets_408_while_normal_ingests_stay_fast() {
    slow_clients(Slowness::Body).await;
}

async fn slow_clients(slowness: Slowness) {
    let _load = support::exclusive().await;
    let clients = pick(200, 500);
    let (fault, expected) = match slowness {
        Slowness::Headers => (
            format!("Slow-loris: {clients} clients sending headers at 1 byte/s (read timeout {READ_TIMEOUT_MS} ms)"),
            format!(
                "each connection closed by the server within {READ_TIMEOUT_MS} ms + {CUT_SLACK_MS} ms; normal ingests answer within {FAST_P90_MS} ms (p90; max {FAST_MAX_MS} ms) meanwhile"
            ),
        ),
        Slowness::Body => (
            format!("Slow body: {clients} clients sending the body at 1 byte/s (read timeout {READ_TIMEOUT_MS} ms)"),
            format!(
                "each gets 408 request_timeout within {READ_TIMEOUT_MS} ms + {CUT_SLACK_MS} ms; normal ingests answer within {FAST_P90_MS} ms (p90; max {FAST_MAX_MS} ms) meanwhile"
            ),
        ),
    };
    let mut row = Row::new(&fault, &expected);
    let gateway = Gateway::new().env("HOOKRELAY_INGEST_READ_TIMEOUT_MS", &READ_TIMEOUT_MS.to_string());
    let process = gateway.start().await;
    let (ingest_url, _) = support::setup_merchant(&process, &[]).await;
    let path = ingest_url
        .split_once(&format!(":{}", process.port))
        .unwrap()
        .1
        .to_owned();
    let body = br#"{"id": "slow", "type": "order.paid", "data": {"pad": "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#.to_vec();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        body.len()
    );

    let give_up = Duration::from_millis(READ_TIMEOUT_MS * 4);
    let slow: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(slow_client(process.port, head.clone(), body.clone(), slowness, give_up)))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (latencies, statuses) = normal_ingests(&process, &ingest_url, 30).await;
    let mut cuts = Vec::new();
    for client in slow {
        cuts.push(client.await.unwrap());
    }

    let mut sorted = latencies.clone();
    sorted.sort_by(f64::total_cmp);
    let worst = sorted.last().copied().unwrap_or(f64::INFINITY);
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    let p90 = support::quantile(&sorted, 0.9);
    row.observe(format!(
        "normal ingests meanwhile: {accepted}/{} accepted, p50 {:.0} ms, p90 {p90:.0} ms, max {worst:.0} ms",
        statuses.len(),
        support::quantile(&sorted, 0.5)
    ));
    row.check(
        accepted == statuses.len(),
        format!("normal ingests answered {statuses:?}"),
    );
    row.check(
        p90 <= FAST_P90_MS && worst <= FAST_MAX_MS,
        format!("normal ingests took p90 {p90:.0} ms, max {worst:.0} ms"),
    );

    let mut closed: Vec<f64> = cuts
        .iter()
        .filter_map(|c| c.after)
        .map(|d| d.as_secs_f64() * 1000.0)
        .collect();
    closed.sort_by(f64::total_cmp);
    let open = cuts.iter().filter(|c| c.after.is_none()).count();
    let mut answers: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for cut in &cuts {
        *answers
            .entry(if cut.answer.is_empty() {
                "(closed, no answer)".to_owned()
            } else {
                cut.answer.clone()
            })
            .or_default() += 1;
    }
    row.observe(format!(
        "slow clients: {} closed by the server (after p50 {:.0} ms, max {:.0} ms), {open} still open after {} s; answers {answers:?}",
        closed.len(),
        support::quantile(&closed, 0.5),
        closed.last().copied().unwrap_or(0.0),
        give_up.as_secs()
    ));
    row.check(open == 0, format!("{open} slow clients were never cut off"));
    let limit = (READ_TIMEOUT_MS + CUT_SLACK_MS) as f64;
    match slowness {
        Slowness::Headers => {
            let late = closed.iter().filter(|ms| **ms > limit).count();
            row.check(late == 0, format!("{late} slow clients cut off later than {limit} ms"));
        }
        Slowness::Body => {
            let mut answered: Vec<f64> = cuts
                .iter()
                .filter_map(|c| c.answered_after)
                .map(|d| d.as_secs_f64() * 1000.0)
                .collect();
            answered.sort_by(f64::total_cmp);
            row.observe(format!(
                "answers came after p50 {:.0} ms, max {:.0} ms",
                support::quantile(&answered, 0.5),
                answered.last().copied().unwrap_or(0.0)
            ));
            let late = answered.iter().filter(|ms| **ms > limit).count();
            row.check(late == 0, format!("{late} slow bodies answered later than {limit} ms"));
            let timed_out = cuts
                .iter()
                .filter(|c| c.answer.contains("408") && c.answer.contains("request_timeout"))
                .count();
            row.check(
                timed_out == clients,
                format!("only {timed_out} of {clients} got 408 request_timeout"),
            );
        }
    }
    let (status, _) = process
        .ingest(&ingest_url, &support::event_body("after", None, 10))
        .await
        .expect("ingest after");
    row.check(
        status == 202,
        format!("after the slow clients, ingest answered {status}"),
    );
    row.check(
        support::panic_trace(&process.stderr()).is_none(),
        "a panic in the gateway's stderr",
    );
    row.finish();
}
