//! The real `hookrelay` binary as a child process: signals, settings, the generated
//! admin token, the data-directory lock. The harness itself ([`Gateway`]) lives in
//! `tests/common/gateway.rs`, shared with the fault-injection suite; `crash.rs` and
//! `durability.rs` use it too.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::gateway::{free_port, strip_ansi, Gateway, PROCESS_ADMIN_TOKEN};
use crate::helpers::{Receiver, Reply};

/// Runs the binary to completion with `args` and `env` (nothing else from HOOKRELAY_*),
/// killing it if it still runs after 10 s. Returns (status, stdout, stderr).
fn run_to_exit(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_hookrelay"));
    for (name, _) in std::env::vars() {
        if name.starts_with("HOOKRELAY_") {
            command.env_remove(name);
        }
    }
    let mut child = command
        .env("HOOKRELAY_LISTEN", format!("127.0.0.1:{}", free_port()))
        .env("HOOKRELAY_DATA_DIR", dir.path())
        .env("HOOKRELAY_ADMIN_TOKEN", PROCESS_ADMIN_TOKEN)
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting hookrelay");
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "hookrelay {args:?} with {env:?} was still running after 10 s:\n{}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().unwrap();
    let text = |bytes: &[u8]| strip_ansi(&String::from_utf8_lossy(bytes));
    (output.status, text(&output.stdout), text(&output.stderr))
}

/// The settings table of SPEC.md.
const SPEC_SETTINGS: &[&str] = &[
    "HOOKRELAY_LISTEN",
    "HOOKRELAY_DATA_DIR",
    "HOOKRELAY_PUBLIC_URL",
    "HOOKRELAY_DATABASE_URL",
    "HOOKRELAY_ADMIN_TOKEN",
    "HOOKRELAY_MAX_ENDPOINTS_PER_MERCHANT",
    "HOOKRELAY_MAX_PAYLOAD_BYTES",
    "HOOKRELAY_DELIVERY_TIMEOUT_MS",
    "HOOKRELAY_RETRY_INITIAL_MS",
    "HOOKRELAY_RETRY_MAX_MS",
    "HOOKRELAY_RETRY_MAX_ATTEMPTS",
];

#[test]
fn help_exits_zero_and_lists_the_serve_command_and_every_setting_of_the_spec() {
    let (status, stdout, stderr) = run_to_exit(&["--help"], &[]);
    assert!(status.success(), "--help exited with {status}: {stderr}");
    assert!(
        stdout.contains("serve"),
        "--help does not list the serve command:\n{stdout}"
    );
    let missing: Vec<_> = SPEC_SETTINGS.iter().filter(|name| !stdout.contains(*name)).collect();
    assert!(missing.is_empty(), "--help does not list {missing:?}:\n{stdout}");
}

/// Arguments, environment, and what the message must name (compared case-insensitively).
type RefusalCase<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);

#[test]
fn a_malformed_or_unknown_setting_stops_start_up_with_a_message_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let bad_value_file = dir.path().join("bad-value.toml");
    std::fs::write(&bad_value_file, "delivery_timeout_ms = \"abc\"\n").unwrap();
    let unknown_key_file = dir.path().join("unknown-key.toml");
    std::fs::write(&unknown_key_file, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let (bad_value_file, unknown_key_file) = (bad_value_file.to_str().unwrap(), unknown_key_file.to_str().unwrap());

    let cases: &[RefusalCase] = &[
        (
            &[],
            &[("HOOKRELAY_DELIVERY_TIMEOUT_MS", "abc")],
            "HOOKRELAY_DELIVERY_TIMEOUT_MS",
        ),
        (&[], &[("HOOKRELAY_LISTN", "x")], "HOOKRELAY_LISTN"),
        (&[], &[("HOOKRELAY_LISTEN", "nowhere")], "HOOKRELAY_LISTEN"),
        (
            &[],
            &[("HOOKRELAY_RETRY_MAX_ATTEMPTS", "-1")],
            "HOOKRELAY_RETRY_MAX_ATTEMPTS",
        ),
        (&["--config", bad_value_file], &[], "DELIVERY_TIMEOUT_MS"),
        (&["--config", unknown_key_file], &[], "lisen"),
    ];
    for (args, env, name) in cases {
        let (status, _, stderr) = run_to_exit(args, env);
        assert!(
            !status.success(),
            "{args:?} {env:?}: exited with {status}, expected a refusal"
        );
        assert!(
            stderr.to_lowercase().contains(&name.to_lowercase()),
            "{args:?} {env:?}: the message does not name {name}:\n{stderr}"
        );
    }
}

#[tokio::test]
async fn a_toml_config_file_is_read_and_the_environment_wins_over_it() {
    let file_port = free_port();
    let file_token = "file-admin-token-abcdefghijkl";
    let gateway = Gateway::new().without_env("HOOKRELAY_ADMIN_TOKEN");
    // Beside the data directory, not in it: a data directory holds only hookrelay's files.
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("hookrelay.toml");
    std::fs::write(
        &config,
        format!("listen = \"127.0.0.1:{file_port}\"\nadmin_token = \"{file_token}\"\nmax_endpoints_per_merchant = 1\n"),
    )
    .unwrap();
    // The environment names another port and another limit; the token only the file has.
    let gateway = gateway
        .arg("--config")
        .arg(config.to_str().unwrap())
        .env("HOOKRELAY_MAX_ENDPOINTS_PER_MERCHANT", "2");
    let mut process = gateway.spawn();
    process.admin_token = file_token.to_owned();
    process.wait_ready(Duration::from_secs(20)).await;

    let merchant = process.create_merchant("cfg").await;
    assert!(
        merchant["ingest_url"]
            .as_str()
            .unwrap()
            .contains(&format!(":{}/", gateway.port)),
        "{merchant}"
    );
    for n in 0..2 {
        process
            .create_endpoint("cfg", &format!("http://127.0.0.1:9/{n}"), &[])
            .await;
    }
    let (status, body) = process
        .admin(
            reqwest::Method::POST,
            "/api/v1/merchants/cfg/endpoints",
            Some(json!({ "url": "http://127.0.0.1:9/2" })),
        )
        .await;
    assert_eq!(status, 409, "the environment's limit of 2 should hold: {body}");
    assert_eq!(body["error"]["code"], "endpoint_limit_reached", "{body}");

    let file_address = format!("http://127.0.0.1:{file_port}/readyz");
    assert!(
        process.http.get(file_address).send().await.is_err(),
        "something answers on the file's port, which the environment overrode"
    );
}

#[tokio::test]
async fn sigterm_under_light_load_finishes_the_attempts_under_way_and_exits_zero_within_the_grace_period() {
    let grace = Duration::from_millis(2000);
    let events = 5;
    // Each attempt takes 300 ms, well inside the grace period.
    let receiver = Receiver::answering(|_| Reply::after(Duration::from_millis(300), 200)).await;
    let gateway = Gateway::new().env("HOOKRELAY_SHUTDOWN_GRACE_MS", &grace.as_millis().to_string());
    let mut process = gateway.start().await;
    let merchant = process.create_merchant("m1").await;
    process.create_endpoint("m1", &receiver.url("/hook"), &[]).await;
    let ingest_url = merchant["ingest_url"].as_str().unwrap();
    let mut event_ids = Vec::new();
    for n in 0..events {
        let (status, body) = process
            .ingest(ingest_url, &json!({ "id": format!("e{n}") }))
            .await
            .unwrap();
        assert_eq!(status, 202, "{body}");
        event_ids.push(body["event_id"].as_str().unwrap().to_owned());
    }
    receiver.wait_for(events, Duration::from_secs(5)).await;

    let asked = Instant::now();
    process.terminate();
    let status = process.expect_exit(grace + Duration::from_secs(5)).await;
    let took = asked.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "SIGTERM should end in exit 0:\n{}",
        process.stderr()
    );
    assert!(
        took <= grace + Duration::from_millis(1000),
        "the stop took {took:?}, the grace period is {grace:?}"
    );

    // Attempts that finished during the stop are recorded: after a restart nothing is
    // delivered a second time.
    let process = gateway.start().await;
    for event_id in &event_ids {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let path = format!("/api/v1/merchants/m1/events/{event_id}");
            let (_, event) = process.admin(reqwest::Method::GET, &path, None).await;
            if event["deliveries"][0]["status"] == "succeeded" {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the delivery never became succeeded: {event:#}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let got = receiver.received();
    assert_eq!(
        got.len(),
        events,
        "attempts under way at SIGTERM were cut off and delivered again after the restart (webhook-ids: {:?})",
        got.iter()
            .map(|r| r.header("webhook-id").to_owned())
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn readyz_stops_answering_200_after_sigterm_until_the_process_exits() {
    // A delivery the receiver holds keeps the process in its shutdown for a while.
    let receiver = Receiver::answering(|_| Reply::after(Duration::from_millis(2500), 200)).await;
    let gateway = Gateway::new().env("HOOKRELAY_SHUTDOWN_GRACE_MS", "3000");
    let mut process = gateway.start().await;
    let merchant = process.create_merchant("m1").await;
    process.create_endpoint("m1", &receiver.url("/hook"), &[]).await;
    let (status, _) = process
        .ingest(merchant["ingest_url"].as_str().unwrap(), &json!({ "id": "held" }))
        .await
        .unwrap();
    assert_eq!(status, 202);
    receiver.wait_for(1, Duration::from_secs(5)).await;

    process.terminate();
    let asked = Instant::now();
    let (mut not_ready, mut refused, mut ready_after_stop) = (0, 0, 0);
    let mut first_not_ready: Option<Duration> = None;
    for _ in 0..2000 {
        if process.wait_exit(Duration::ZERO).await.is_some() {
            break;
        }
        let answer = process.http.get(process.url("/readyz")).send().await;
        match answer.map(|r| r.status().as_u16()) {
            Ok(200) if first_not_ready.is_some() => ready_after_stop += 1,
            Ok(200) => {}
            Ok(503) => not_ready += 1,
            Ok(other) => panic!("/readyz answered {other} during shutdown"),
            Err(_) => refused += 1,
        }
        if first_not_ready.is_none() && (not_ready + refused) > 0 {
            first_not_ready = Some(asked.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = process.expect_exit(Duration::from_secs(10)).await;
    println!("after SIGTERM: /readyz 503 × {not_ready}, connection refused × {refused}");
    let first_not_ready = first_not_ready.expect("/readyz kept answering 200 until the process exited");
    assert!(
        first_not_ready < Duration::from_secs(1),
        "/readyz still said 200 {first_not_ready:?} after SIGTERM"
    );
    assert_eq!(
        ready_after_stop, 0,
        "/readyz answered 200 again after it had stopped doing so"
    );
    assert_eq!(status.code(), Some(0), "{}", process.stderr());
}

#[tokio::test]
async fn a_delivery_cut_off_by_sigterm_is_retried_and_delivered_after_restart() {
    // The first attempt is held 3 s, longer than the 500 ms grace; later ones succeed.
    let receiver = Receiver::answering(|n| match n {
        0 => Reply::after(Duration::from_secs(3), 200),
        _ => Reply::status(200),
    })
    .await;
    let gateway = Gateway::new()
        .env("HOOKRELAY_SHUTDOWN_GRACE_MS", "500")
        .env("HOOKRELAY_DELIVERY_TIMEOUT_MS", "10000");
    let mut process = gateway.start().await;
    let merchant = process.create_merchant("m1").await;
    process.create_endpoint("m1", &receiver.url("/hook"), &[]).await;
    let (status, accepted) = process
        .ingest(
            merchant["ingest_url"].as_str().unwrap(),
            &json!({ "id": "cut", "type": "a.b" }),
        )
        .await
        .unwrap();
    assert_eq!(status, 202, "{accepted}");
    let event_id = accepted["event_id"].as_str().unwrap().to_owned();
    receiver.wait_for(1, Duration::from_secs(5)).await;

    let asked = Instant::now();
    process.terminate();
    let status = process.expect_exit(Duration::from_secs(10)).await;
    let took = asked.elapsed();
    assert_eq!(status.code(), Some(0), "{}", process.stderr());
    assert!(
        took < Duration::from_millis(2500),
        "the stop took {took:?}: it waited for the held attempt"
    );
    assert_eq!(
        receiver.received().len(),
        1,
        "nothing should have been retried before the restart"
    );

    let process = gateway.start().await;
    let got = receiver.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(got[1].header("webhook-id"), event_id);
    assert_eq!(got[1].json()["id"], "cut");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, event) = process
            .admin(
                reqwest::Method::GET,
                &format!("/api/v1/merchants/m1/events/{event_id}"),
                None,
            )
            .await;
        if event["deliveries"][0]["status"] == "succeeded" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the delivery never became succeeded: {event:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn without_an_admin_token_one_is_generated_into_the_data_dir_kept_private_and_reused() {
    let gateway = Gateway::new()
        .without_env("HOOKRELAY_ADMIN_TOKEN")
        .env("HOOKRELAY_LOG", "info");
    let data_dir = gateway.data_path().canonicalize().unwrap();
    let mut process = gateway.start().await;

    let log = process.stderr();
    let path = token_path_in(&log, gateway.data_path())
        .or_else(|| token_path_in(&log, &data_dir))
        .unwrap_or_else(|| panic!("no path inside the data directory was logged:\n{log}"));
    assert_eq!(
        path.parent().unwrap().canonicalize().unwrap(),
        data_dir,
        "{}",
        path.display()
    );
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&path).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "{} has mode {:o}", path.display(), mode & 0o777);
    let token = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    assert!(token.len() >= 16, "a short token: {token:?}");
    assert!(!log.contains(&token), "the token itself was logged:\n{log}");

    let get = reqwest::Method::GET;
    let (status, _) = process.admin_as(&token, get.clone(), "/api/v1/merchants", None).await;
    assert_eq!(status, 200);
    for wrong in ["", "not-the-token-0123456789"] {
        let (status, _) = process.admin_as(wrong, get.clone(), "/api/v1/merchants", None).await;
        assert_eq!(status, 401, "token {wrong:?}");
    }
    process.admin_token = token.clone();
    process.create_merchant("kept").await;

    process.terminate();
    assert_eq!(process.expect_exit(Duration::from_secs(10)).await.code(), Some(0));
    let process = gateway.start().await;
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().trim(),
        token,
        "the token changed on restart"
    );
    let (status, body) = process.admin_as(&token, get, "/api/v1/merchants/kept", None).await;
    assert_eq!(status, 200, "{body}");
}

/// The path of the admin token file under `dir`, as the log names it.
fn token_path_in(log: &str, dir: &Path) -> Option<PathBuf> {
    let dir = dir.to_str()?;
    // The admin token's file, not the secret key's (also logged, also in the data dir).
    let start = log.find(&format!("{dir}/admin_token"))?;
    let path: String = log[start..]
        .chars()
        .take_while(|c| !c.is_whitespace() && !matches!(c, '"' | '\'' | ',' | '}'))
        .collect();
    Some(PathBuf::from(path))
}

#[tokio::test]
async fn a_second_process_on_the_same_data_dir_refuses_to_start_while_the_first_runs() {
    let gateway = Gateway::new();
    let mut first = gateway.start().await;
    let mut second_gateway = gateway.clone();
    second_gateway.port = free_port();
    let mut second = second_gateway.spawn();
    let status = second.expect_exit(Duration::from_secs(10)).await;
    let message = second.stderr();
    assert!(!status.success(), "the second process exited with {status}");
    let dir = gateway.data_path().to_str().unwrap();
    assert!(
        message.contains(dir),
        "the message does not name the data directory:\n{message}"
    );
    assert!(
        message.to_lowercase().contains("another"),
        "the message does not say another process has the data directory open:\n{message}"
    );
    first.wait_ready(Duration::from_secs(2)).await;
}
