//! The real `hookrelay` binary as a child process. [`Gateway`] says how to start it
//! (settings, data directory, port, an optional wrapper command); [`GatewayProcess`]
//! is one running (or exited) process. Shared by the `api` and `faults` test binaries
//! through `#[path = "../common/gateway.rs"] mod gateway;`.

// Each binary uses a different part of this file.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tempfile::TempDir;

pub const PROCESS_ADMIN_TOKEN: &str = "process-admin-token-0123456789";

/// A port that was free a moment ago (bound on 127.0.0.1, then released).
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding a free port");
    listener.local_addr().expect("local address").port()
}

/// How to start the binary. Cloning keeps the data directory, port and settings, so
/// a restart opens the same store on the same address.
#[derive(Clone)]
pub struct Gateway {
    /// A scratch directory kept for as long as any clone lives; the data directory
    /// unless [`Gateway::in_data_dir`] named another one.
    pub data_dir: Arc<TempDir>,
    /// `HOOKRELAY_DATA_DIR`.
    data_path: PathBuf,
    pub port: u16,
    env: BTreeMap<String, String>,
    args: Vec<String>,
    /// A command that runs the binary (e.g. `strace … -o FILE`), or empty.
    wrapper: Vec<String>,
}

impl Default for Gateway {
    fn default() -> Self {
        Self::new()
    }
}

impl Gateway {
    /// A fresh data directory, a free port, the test admin token, fast retries, quiet logs.
    pub fn new() -> Self {
        let env = [
            ("HOOKRELAY_ADMIN_TOKEN", PROCESS_ADMIN_TOKEN),
            ("HOOKRELAY_RETRY_INITIAL_MS", "100"),
            ("HOOKRELAY_RETRY_MAX_MS", "400"),
            ("HOOKRELAY_RETRY_MAX_ATTEMPTS", "10"),
            ("HOOKRELAY_DELIVERY_TIMEOUT_MS", "5000"),
            ("HOOKRELAY_SHUTDOWN_GRACE_MS", "3000"),
            ("HOOKRELAY_LOG", "warn"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let data_dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        Self {
            data_path: data_dir.path().to_owned(),
            data_dir,
            port: free_port(),
            env,
            args: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.insert(name.to_owned(), value.to_owned());
        self
    }

    pub fn without_env(mut self, name: &str) -> Self {
        self.env.remove(name);
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_owned());
        self
    }

    pub fn wrapped_in(mut self, command: &[&str]) -> Self {
        self.wrapper = command.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Uses `path` as the data directory instead of the scratch directory.
    pub fn in_data_dir(mut self, path: &Path) -> Self {
        self.data_path = path.to_owned();
        self
    }

    /// The data directory (`HOOKRELAY_DATA_DIR`).
    pub fn data_path(&self) -> &Path {
        &self.data_path
    }

    /// Starts the process without waiting for it to be ready.
    pub fn spawn(&self) -> GatewayProcess {
        let binary = env!("CARGO_BIN_EXE_hookrelay");
        let mut command = match self.wrapper.split_first() {
            Some((program, rest)) => {
                let mut command = Command::new(program);
                command.args(rest).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        // Nothing from the test runner's environment may change the settings.
        for (name, _) in std::env::vars() {
            if name.starts_with("HOOKRELAY_") {
                command.env_remove(name);
            }
        }
        command
            .env("HOOKRELAY_LISTEN", format!("127.0.0.1:{}", self.port))
            .env("HOOKRELAY_DATA_DIR", self.data_path())
            .envs(&self.env)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("starting hookrelay");
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().expect("stderr pipe");
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                let mut sink = sink.lock().unwrap();
                sink.push_str(&strip_ansi(&line));
                sink.push('\n');
            }
        });
        GatewayProcess {
            child,
            wrapped: !self.wrapper.is_empty(),
            gateway_pid: None,
            port: self.port,
            admin_token: self.env.get("HOOKRELAY_ADMIN_TOKEN").cloned().unwrap_or_default(),
            http: reqwest::Client::builder()
                .no_proxy()
                .pool_max_idle_per_host(0)
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
            stderr,
        }
    }

    /// Starts the process and waits until `/readyz` answers 200.
    pub async fn start(&self) -> GatewayProcess {
        let mut process = self.spawn();
        process.wait_ready(Duration::from_secs(30)).await;
        process
    }
}

/// A running (or exited) `hookrelay` process. Killed when dropped.
pub struct GatewayProcess {
    child: Child,
    /// Whether `child` is a wrapper (strace) whose own child is hookrelay.
    wrapped: bool,
    gateway_pid: Option<u32>,
    pub port: u16,
    /// The admin token given in the environment (empty when none was).
    pub admin_token: String,
    /// A client without connection reuse, so a restart never meets a dead connection.
    pub http: reqwest::Client,
    stderr: Arc<Mutex<String>>,
}

impl GatewayProcess {
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// Everything the process wrote to stderr so far, colours removed.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The pid of hookrelay itself (not of a wrapper).
    pub fn pid(&mut self) -> u32 {
        if !self.wrapped {
            return self.child.id();
        }
        if let Some(pid) = self.gateway_pid {
            return pid;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(pid) = self.find_gateway_pid() {
                self.gateway_pid = Some(pid);
                return pid;
            }
            assert!(Instant::now() < deadline, "the wrapper never started hookrelay");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The wrapper's child that runs our binary (the wrapper may fork helpers first).
    fn find_gateway_pid(&self) -> Option<u32> {
        let binary = Path::new(env!("CARGO_BIN_EXE_hookrelay")).canonicalize().ok()?;
        let wrapper = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{wrapper}/task/{wrapper}/children")).ok()?;
        let found = children
            .split_whitespace()
            .filter_map(|pid| pid.parse::<u32>().ok())
            .find(|pid| std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == binary));
        found
    }

    /// Polls `/readyz` until it answers 200; panics (with the process's stderr) if
    /// the process exits first or the deadline passes.
    pub async fn wait_ready(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("polling the child") {
                panic!("hookrelay exited ({status}) before it was ready:\n{}", self.stderr());
            }
            if let Ok(response) = self.http.get(self.url("/readyz")).send().await {
                if response.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "hookrelay not ready in {timeout:?}:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Sends SIGTERM to hookrelay.
    pub fn terminate(&mut self) {
        self.signal("TERM");
    }

    /// SIGKILL without waiting, through a shared reference (senders may hold others).
    pub fn sigkill(&self) {
        self.signal_shared("KILL");
    }

    /// SIGTERM through a shared reference.
    pub fn sigterm(&self) {
        self.signal_shared("TERM");
    }

    fn signal_shared(&self, name: &str) {
        let pid = match (self.wrapped, self.gateway_pid) {
            (false, _) => self.child.id(),
            (true, Some(pid)) => pid,
            (true, None) => panic!("call pid() once before signalling a wrapped process through &self"),
        };
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    fn signal(&mut self, name: &str) {
        let pid = self.pid();
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(pid.to_string())
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{name} {pid} failed");
    }

    /// Waits for the process to exit; `None` if it is still running at the deadline.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().expect("polling the child") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits for the process to exit and panics if it does not in time.
    pub async fn expect_exit(&mut self, timeout: Duration) -> ExitStatus {
        match self.wait_exit(timeout).await {
            Some(status) => status,
            None => panic!("hookrelay still running after {timeout:?}:\n{}", self.stderr()),
        }
    }

    pub async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        self.admin_as(&self.admin_token, method, path, body).await
    }

    pub async fn admin_as(
        &self,
        token: &str,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self.http.request(method, self.url(path));
        if !token.is_empty() {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("admin request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Creates a merchant and returns its JSON (with `ingest_url`).
    pub async fn create_merchant(&self, id: &str) -> Value {
        let (status, body) = self
            .admin(reqwest::Method::POST, "/api/v1/merchants", Some(json!({ "id": id })))
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// Registers an endpoint (no filter when `event_types` is empty).
    pub async fn create_endpoint(&self, merchant: &str, url: &str, event_types: &[&str]) -> Value {
        let (status, body) = self
            .admin(
                reqwest::Method::POST,
                &format!("/api/v1/merchants/{merchant}/endpoints"),
                Some(json!({ "url": url, "event_types": event_types })),
            )
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    /// The value of one series of `/metrics` (e.g. `hookrelay_queue_depth` or
    /// `hookrelay_delivery_attempts_total{outcome="timeout"}`); 0 when absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = match self.http.get(self.url("/metrics")).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(error) => panic!("GET /metrics failed: {error}"),
        };
        metric_in(&text, series)
    }

    /// Sends an event as a provider does; transport errors are returned, not panicked.
    pub async fn ingest(&self, ingest_url: &str, body: &Value) -> Result<(u16, Value), reqwest::Error> {
        let response = self.http.post(ingest_url).json(body).send().await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Kill hookrelay itself first: a killed strace would leave it running.
            if self.wrapped {
                if let Some(pid) = self.gateway_pid.or_else(|| self.find_gateway_pid()) {
                    let _ = Command::new("kill").arg("-KILL").arg(pid.to_string()).status();
                }
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The value of `series` in a Prometheus text exposition; 0 when absent.
pub fn metric_in(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or(0.0)
}

/// Removes terminal colour sequences (`ESC [ … m`) from a log line.
pub fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
