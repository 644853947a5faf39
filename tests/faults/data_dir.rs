//! A damaged or foreign data directory at start-up: a truncated `db`, permissions the
//! process lacks, a `FORMAT` of another version, unrelated files. Each must stop
//! start-up with a one-line message naming the problem and a non-zero exit, never a
//! panic, and never start on an empty store over old data.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::gateway::Gateway;
use crate::net::TcpReceiver;
use crate::report::Row;
use crate::support;

const EXPECTED: &str = "non-zero exit; one-line message naming the problem; no panic trace; no start on an empty store";
const OLD_EVENTS: usize = 30;

/// Fills the gateway's data directory with a merchant, an endpoint and some events, then stops it.
async fn make_old_store(gateway: &Gateway) {
    let receiver = TcpReceiver::healthy().await;
    let mut process = gateway.start().await;
    let (ingest_url, _) = support::setup_merchant(&process, &[(&[], receiver.url("/hook"))]).await;
    for n in 0..OLD_EVENTS {
        let (status, body) = process
            .ingest(&ingest_url, &support::event_body(&format!("old-{n}"), None, 2000))
            .await
            .expect("ingest");
        assert_eq!(status, 202, "{body}");
    }
    receiver.wait_for(OLD_EVENTS, Duration::from_secs(10)).await;
    process.terminate();
    let status = process.expect_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0), "{}", process.stderr());
}

/// Starts the gateway on a bad data directory and checks it refuses as it should.
/// `keywords`: the message must contain one of them (case-insensitive).
async fn expect_refusal(row: &mut Row, case: &str, gateway: &Gateway, keywords: &[&str], names_path: &Path) {
    let mut process = gateway.spawn();
    // Either it exits, or it becomes ready (and so started on this directory).
    let ready = support::try_ready(&mut process, Duration::from_secs(20)).await.is_ok();
    let exit = process
        .wait_exit(Duration::from_millis(if ready { 0 } else { 2000 }))
        .await;
    let stderr = process.stderr();
    let Some(status) = exit else {
        // It is serving: on what?
        let (merchant_status, _) = process.admin(reqwest::Method::GET, "/api/v1/merchants/m1", None).await;
        let (_, events) = process
            .admin(reqwest::Method::GET, "/api/v1/merchants/m1/events?limit=500", None)
            .await;
        let events = events["data"].as_array().map_or(0, Vec::len);
        row.observe(format!(
            "STARTED (ready: {ready}): merchant m1 → {merchant_status}, {events} events listed"
        ));
        row.check(false, format!("{case}start-up was not refused"));
        return;
    };
    let message = support::final_message(&stderr);
    let lines = stderr.lines().filter(|l| !l.trim().is_empty()).count();
    row.observe(format!(
        "exit code {:?}; message: {}; {lines} stderr line(s)",
        status.code(),
        message.as_deref().unwrap_or("(none)")
    ));
    row.check(!status.success(), format!("exited with {status}"));
    if let Some(trace) = support::panic_trace(&stderr) {
        row.check(false, format!("panic trace in stderr: {trace}"));
    }
    let Some(message) = message else {
        row.check(false, format!("no `hookrelay: …` message; stderr: {stderr}"));
        return;
    };
    let lower = message.to_lowercase();
    row.check(
        keywords.iter().any(|k| lower.contains(&k.to_lowercase())),
        format!("the message names none of {keywords:?}"),
    );
    let path = names_path.display().to_string();
    row.check(message.contains(&path), format!("the message does not name {path}"));
}

/// Names of the entries in a directory.
fn entries(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_db_file_stops_start_up_with_a_clear_message() {
    let _load = support::shared().await;
    let mut row = Row::new(
        "Data dir: truncated `db` file (cut to half its length; cut to 0 bytes)",
        EXPECTED,
    );
    for (name, cut) in [("half", 2), ("0 bytes", 0)] {
        let gateway = Gateway::new();
        make_old_store(&gateway).await;
        let db = gateway.data_path().join("db");
        let length = std::fs::metadata(&db).expect("the db file").len();
        let new_length = length.checked_div(cut).unwrap_or(0);
        let file = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
        file.set_len(new_length).unwrap();
        drop(file);
        row.observe(format!(
            "[{name}] db of {OLD_EVENTS} events cut from {length} to {new_length} bytes (data dir holds {:?})",
            entries(gateway.data_path())
        ));
        expect_refusal(
            &mut row,
            &format!("[{name}] "),
            &gateway,
            &[
                "corrupt",
                "damaged",
                "truncated",
                "invalid",
                "unexpected end",
                "incomplete",
            ],
            gateway.data_path(),
        )
        .await;
    }
    row.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_the_process_may_not_read_stops_start_up_with_a_clear_message() {
    let _load = support::shared().await;
    let mut row = Row::new(
        "Data dir: wrong permissions (root's dir, mode 0700; gateway run as nobody)",
        EXPECTED,
    );
    let as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"];
    let probe = Command::new(as_nobody[0])
        .args(&as_nobody[1..])
        .arg(env!("CARGO_BIN_EXE_hookrelay"))
        .arg("--help")
        .output();
    match probe {
        Ok(output) if output.status.success() => {}
        Ok(output) => {
            return row.skip(&format!(
                "cannot run the binary as nobody with setpriv: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        }
        Err(error) => return row.skip(&format!("setpriv unavailable: {error}")),
    }
    let gateway = Gateway::new();
    make_old_store(&gateway).await;
    let permissions = std::os::unix::fs::PermissionsExt::from_mode(0o700);
    std::fs::set_permissions(gateway.data_path(), permissions).unwrap();
    row.observe("data dir mode 700, owner root");
    let as_nobody = gateway.clone().wrapped_in(&as_nobody);
    expect_refusal(&mut row, "", &as_nobody, &["permission denied"], gateway.data_path()).await;
    row.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_of_another_format_version_stops_start_up_with_a_clear_message() {
    let _load = support::shared().await;
    let mut row = Row::new("Data dir: incompatible version (`FORMAT` file says 999)", EXPECTED);
    let gateway = Gateway::new();
    make_old_store(&gateway).await;
    let format = gateway.data_path().join("FORMAT");
    let before = std::fs::read_to_string(&format).ok();
    row.observe(format!("FORMAT file before: {before:?}"));
    std::fs::write(&format, "999\n").unwrap();
    expect_refusal(&mut row, "", &gateway, &["999"], gateway.data_path()).await;
    row.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_dir_full_of_unrelated_files_is_not_taken_over() {
    let _load = support::shared().await;
    let mut row = Row::new("Data dir: a directory full of unrelated files", EXPECTED);
    let gateway = Gateway::new();
    let dir = gateway.data_path();
    std::fs::write(dir.join("notes.txt"), "shopping list\n").unwrap();
    std::fs::write(dir.join("report.pdf"), b"%PDF-1.4 not really").unwrap();
    std::fs::create_dir(dir.join("photos")).unwrap();
    std::fs::write(dir.join("photos").join("cat.jpg"), [0xffu8, 0xd8, 0xff, 0xe0]).unwrap();
    std::fs::write(dir.join(".bashrc"), "alias ll='ls -l'\n").unwrap();
    let before = entries(dir);
    expect_refusal(
        &mut row,
        "",
        &gateway,
        &[
            "not a hookrelay",
            "unrelated",
            "not empty",
            "foreign",
            "unknown",
            "format",
        ],
        dir,
    )
    .await;
    let added: Vec<String> = entries(dir).difference(&before).cloned().collect();
    row.observe(format!("files added to the directory: {added:?}"));
    row.check(
        added.is_empty(),
        format!("the gateway wrote into a foreign directory: {added:?}"),
    );
    row.finish();
}
