//! The fsync check: the real binary under `strace` proves that no `202` leaves before
//! the event is synced to `<data dir>/db`, and that concurrent ingests share syncs.
//! `scripts/check-fsync.sh` runs the same check by hand.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use crate::gateway::Gateway;
use crate::helpers::{Receiver, Reply};

const SEQUENTIAL: usize = 20;
const SENDERS: usize = 8;
const PER_SENDER: usize = 50;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// `pwrite64` to `<data dir>/db`.
    Write,
    /// `fdatasync` or `fsync` of `<data dir>/db`.
    Sync,
    /// An HTTP response written to a socket; `accepted` when it is a 202.
    Response { accepted: bool },
}

/// One traced system call, placed by its position in the trace: strace writes its
/// lines in the order the calls happened, `<unfinished ...>` at entry, `resumed` at exit.
#[derive(Debug)]
struct Call {
    kind: Kind,
    /// Line of the call's entry.
    entry: usize,
    /// Line of its return.
    exit: usize,
    /// Whether it returned without an error.
    ok: bool,
    text: String,
}

/// Reads the calls that matter out of an `strace -f -y` trace.
fn parse_trace(trace: &str, db_path: &str) -> Vec<Call> {
    let db = format!("<{db_path}>");
    let mut calls: Vec<Call> = Vec::new();
    let mut unfinished: HashMap<(String, String), usize> = HashMap::new();
    for (line_no, line) in trace.lines().enumerate() {
        // `PID HH:MM:SS.micros rest`; strace pads the pid column with spaces.
        let Some((pid, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Some((_time, rest)) = rest.trim_start().split_once(' ') else {
            continue;
        };
        if let Some(resumed) = rest.strip_prefix("<... ") {
            let name = resumed.split(' ').next().unwrap_or_default().to_owned();
            if let Some(index) = unfinished.remove(&(pid.to_owned(), name)) {
                calls[index].exit = line_no;
                calls[index].ok = returned_ok(rest);
            }
            continue;
        }
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        let kind = match name {
            "pwrite64" if args.starts_with(|c: char| c.is_ascii_digit()) && first_arg(args).ends_with(&db) => {
                Kind::Write
            }
            "fdatasync" | "fsync" if first_arg(args).ends_with(&db) => Kind::Sync,
            "write" | "writev" | "sendto" | "sendmsg" if args.contains("\"HTTP/1.1 ") => Kind::Response {
                accepted: args.contains("\"HTTP/1.1 202"),
            },
            _ => continue,
        };
        let finished = !rest.contains("<unfinished ...>");
        if !finished {
            unfinished.insert((pid.to_owned(), name.to_owned()), calls.len());
        }
        calls.push(Call {
            kind,
            entry: line_no,
            exit: if finished { line_no } else { usize::MAX },
            ok: finished && returned_ok(rest),
            text: line.to_owned(),
        });
    }
    calls
}

/// The first argument as strace -y prints it: `5</path/to/db>`.
fn first_arg(args: &str) -> &str {
    let end = args.find(['>']).map(|i| i + 1).unwrap_or(args.len());
    &args[..end]
}

/// `… = 0` or `… = 198`, not `= -1 EIO …` nor `= ?`.
fn returned_ok(line: &str) -> bool {
    line.rsplit_once(" = ")
        .and_then(|(_, result)| result.split_whitespace().next())
        .and_then(|n| n.parse::<i64>().ok())
        .is_some_and(|n| n >= 0)
}

/// For the `index`-th 202: the data of this request was written to `db`, and a sync
/// of `db` started after the last such write and returned before the 202 went out.
/// `Err` says what is missing.
fn check_synced_before(calls: &[Call], response: &Call) -> Result<(), String> {
    let previous_response = calls
        .iter()
        .filter(|c| matches!(c.kind, Kind::Response { .. }) && c.entry < response.entry)
        .map(|c| c.entry)
        .max()
        .unwrap_or(0);
    let last_write = calls
        .iter()
        .filter(|c| c.kind == Kind::Write && c.entry < response.entry)
        .max_by_key(|c| c.entry)
        .ok_or("no pwrite64 to db before it")?;
    if last_write.entry < previous_response {
        return Err("nothing was written to db between the previous response and this one".into());
    }
    if last_write.exit > response.entry || !last_write.ok {
        return Err(format!(
            "the last pwrite64 had not returned successfully: {}",
            last_write.text
        ));
    }
    calls
        .iter()
        .find(|c| c.kind == Kind::Sync && c.entry > last_write.exit && c.exit < response.entry && c.ok)
        .map(|_| ())
        .ok_or_else(|| {
            format!(
                "no fdatasync/fsync of db between the last pwrite64 ({}) and the 202",
                last_write.text
            )
        })
}

fn strace_available() -> bool {
    Command::new("strace")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_202_is_written_before_the_event_is_synced_and_concurrent_ingests_share_syncs() {
    if !strace_available() {
        eprintln!("NOTICE: strace is not on PATH; skipping the fsync check");
        return;
    }
    let trace_dir = tempfile::tempdir().unwrap();
    let trace_file = trace_dir.path().join("trace");
    // Deliveries are held by the receiver for the whole test, so the dispatcher
    // writes nothing to db while the ingests are checked.
    let receiver = Receiver::answering(|_| Reply::after(Duration::from_secs(30), 200)).await;
    let gateway = Gateway::new()
        .env("HOOKRELAY_DELIVERY_TIMEOUT_MS", "60000")
        .env("HOOKRELAY_SHUTDOWN_GRACE_MS", "500")
        .wrapped_in(&[
            "strace",
            "-f",
            "-tt",
            "-y",
            "-e",
            "trace=pwrite64,fdatasync,fsync,write,writev,sendto,sendmsg",
            "-o",
            trace_file.to_str().unwrap(),
        ]);
    let mut process = gateway.spawn();
    process.pid();
    process.wait_ready(Duration::from_secs(30)).await;
    let merchant = process.create_merchant("m1").await;
    process.create_endpoint("m1", &receiver.url("/hook"), &[]).await;
    let ingest_url = merchant["ingest_url"].as_str().unwrap().to_owned();

    for n in 0..SEQUENTIAL {
        let (status, body) = process
            .ingest(&ingest_url, &json!({ "id": format!("seq-{n}") }))
            .await
            .unwrap();
        assert_eq!((status, body["deliveries"].as_u64()), (202, Some(1)), "{body}");
    }
    let process = Arc::new(process);
    let senders: Vec<_> = (0..SENDERS)
        .map(|sender| {
            let (process, url) = (process.clone(), ingest_url.clone());
            tokio::spawn(async move {
                for n in 0..PER_SENDER {
                    let body = json!({ "id": format!("par-{sender}-{n}") });
                    let (status, body) = process.ingest(&url, &body).await.unwrap();
                    assert_eq!(status, 202, "{body}");
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    let mut process = Arc::try_unwrap(process).unwrap_or_else(|_| unreachable!());
    process.terminate();
    let status = process.expect_exit(Duration::from_secs(20)).await;
    assert!(
        status.success(),
        "hookrelay under strace exited with {status}:\n{}",
        process.stderr()
    );

    let db_path = gateway.data_path().canonicalize().unwrap().join("db");
    let trace = std::fs::read_to_string(&trace_file).unwrap();
    let calls = parse_trace(&trace, db_path.to_str().unwrap());
    let accepted: Vec<&Call> = calls
        .iter()
        .filter(|c| c.kind == Kind::Response { accepted: true })
        .collect();
    assert_eq!(
        accepted.len(),
        SEQUENTIAL + SENDERS * PER_SENDER,
        "the trace does not show every 202 (trace in {})",
        trace_file.display()
    );

    let failures: Vec<String> = accepted[..SEQUENTIAL]
        .iter()
        .enumerate()
        .filter_map(|(n, response)| {
            check_synced_before(&calls, response)
                .err()
                .map(|e| format!("202 #{n}: {e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "answered before the data was synced:\n{}",
        failures.join("\n")
    );

    let (first, last) = (accepted[SEQUENTIAL].entry, accepted.last().unwrap().entry);
    let syncs = calls
        .iter()
        .filter(|c| c.kind == Kind::Sync && c.entry > accepted[SEQUENTIAL - 1].entry && c.entry < last)
        .count();
    let responses = accepted.iter().filter(|c| c.entry >= first).count();
    println!("concurrent phase ({SENDERS} senders × {PER_SENDER}): {responses} × 202, {syncs} syncs of db");
    assert!(syncs > 0, "no sync of db at all during the concurrent phase");
    assert!(syncs < responses, "{syncs} syncs for {responses} 202s: no group commit");
}

#[test]
fn the_trace_parser_catches_a_202_written_before_the_sync() {
    let db = "/d/db";
    let good = "\
1 00:00:00.000001 pwrite64(9</d/db>, \"x\"..., 24, 0) = 24
2 00:00:00.000002 fdatasync(11</d/db> <unfinished ...>
3 00:00:00.000003 write(16<anon_inode:[eventfd]>, \"\\1\", 8) = 8
2 00:00:00.000004 <... fdatasync resumed>) = 0
4  00:00:00.000005 sendto(23<socket:[1]>, \"HTTP/1.1 202 Accepted\\r\\ncontent-l\"..., 198, MSG_NOSIGNAL, NULL, 0) = 198
";
    let calls = parse_trace(good, db);
    let response = calls
        .iter()
        .find(|c| c.kind == Kind::Response { accepted: true })
        .unwrap();
    assert_eq!(check_synced_before(&calls, response), Ok(()));

    // The same calls with the sync returning after the 202 is written.
    let early = "\
1 00:00:00.000001 pwrite64(9</d/db>, \"x\"..., 24, 0) = 24
2 00:00:00.000002 fdatasync(11</d/db> <unfinished ...>
4 00:00:00.000003 sendto(23<socket:[1]>, \"HTTP/1.1 202 Accepted\\r\\ncontent-l\"..., 198, MSG_NOSIGNAL, NULL, 0) = 198
2 00:00:00.000004 <... fdatasync resumed>) = 0
";
    let calls = parse_trace(early, db);
    let response = calls
        .iter()
        .find(|c| c.kind == Kind::Response { accepted: true })
        .unwrap();
    assert!(check_synced_before(&calls, response).is_err());

    // A sync that started before the write finished does not cover it.
    let stale = "\
2 00:00:00.000001 fdatasync(11</d/db>) = 0
1 00:00:00.000002 pwrite64(9</d/db>, \"x\"..., 24, 0) = 24
4 00:00:00.000003 sendto(23<socket:[1]>, \"HTTP/1.1 202 Accepted\\r\\ncontent-l\"..., 198, MSG_NOSIGNAL, NULL, 0) = 198
";
    let calls = parse_trace(stale, db);
    let response = calls
        .iter()
        .find(|c| c.kind == Kind::Response { accepted: true })
        .unwrap();
    assert!(check_synced_before(&calls, response).is_err());
}
