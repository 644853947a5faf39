//! The benchmark tool end to end: small `hookrelay-bench` runs against the real gateway
//! and against its relay floor, each report read back from its JSON.

use std::process::Command;

/// Runs a small full-mode bench (400 events, 4 merchants × 5 endpoints) and answers its report.
fn bench(extra: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("report.json");
    let output = Command::new(env!("CARGO_BIN_EXE_hookrelay-bench"))
        .args(["--mode", "full", "--skip-limit", "--events", "400", "--merchants", "4"])
        .args(["--senders", "8", "--max-wait-secs", "60", "--json"])
        .arg(&json)
        .args(extra)
        .output()
        .expect("start hookrelay-bench");
    assert!(
        output.status.success(),
        "hookrelay-bench failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read(&json).expect("the report is written");
    serde_json::from_slice(&text).expect("the report is JSON")
}

/// Every event accepted, every delivery received once, and the resources measured.
fn assert_complete(report: &serde_json::Value) {
    assert_eq!(report["ingest"]["ok_2xx"], 400, "{report:#}");
    let delivery = &report["delivery"];
    assert_eq!(delivery["expected"], 2000, "{delivery:#}");
    assert_eq!(delivery["received"], 2000, "{delivery:#}");
    assert_eq!(delivery["missing"], 0, "{delivery:#}");
    assert_eq!(delivery["duplicates"], 0, "{delivery:#}");
    assert_eq!(delivery["unexpected"], 0, "{delivery:#}");
    let cpu = report["resources"]["gateway_cpu_s_per_1000_deliveries"].as_f64();
    assert!(cpu.is_some_and(|cpu| cpu > 0.0), "{:#}", report["resources"]);
}

#[test]
fn the_bench_delivers_every_event_through_the_gateway() {
    let report = bench(&["--gateway-bin", env!("CARGO_BIN_EXE_hookrelay")]);
    assert_eq!(report["gateway"]["kind"], "spawned");
    assert_complete(&report);
    // Durable: at least the ~1 KiB body of each event went to disk.
    let written = report["resources"]["gateway_disk_write_bytes_per_event"].as_f64();
    assert!(written.is_some_and(|bytes| bytes > 1000.0), "{:#}", report["resources"]);
}

#[test]
fn the_relay_floor_delivers_every_event_once_and_keeps_nothing() {
    let report = bench(&["--floor"]);
    assert_eq!(report["gateway"]["kind"], "floor (no store)");
    assert_complete(&report);
    // The floor writes nothing; the gateway above wrote each event to disk.
    let written = report["resources"]["gateway_disk_write_bytes_per_event"].as_f64();
    assert_eq!(written, Some(0.0), "{:#}", report["resources"]);
}
