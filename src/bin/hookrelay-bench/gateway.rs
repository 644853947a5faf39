//! The gateway under test: a `hookrelay` process the bench starts on a fresh data
//! directory and a free port (and stops), or one already running that it only
//! targets. Also the few admin and metrics calls the bench makes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

/// How long a started gateway may take to answer `/readyz` 200.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a stopped gateway may take to exit after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A gateway the bench talks to.
pub struct Gateway {
    /// `http://127.0.0.1:port`, no trailing slash.
    pub base_url: String,
    pub admin_token: String,
    /// The process, when known (started by the bench, or `--gateway-pid`).
    pub pid: Option<u32>,
    /// Its data directory, when known.
    pub data_dir: Option<PathBuf>,
    /// Set when the bench started it.
    process: Option<Spawned>,
}

/// A gateway process the bench started, with its scratch directory. Dropping it
/// kills the process and removes the directory, so an error or Ctrl-C leaves
/// nothing behind.
struct Spawned {
    child: Child,
    work_dir: PathBuf,
    keep: bool,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.work_dir);
        }
    }
}

/// How to start a gateway.
pub struct SpawnOptions {
    pub binary: PathBuf,
    /// Extra settings, applied after the bench's own (so they win).
    pub env: Vec<(String, String)>,
    pub keep_data: bool,
}

impl Gateway {
    /// Starts `hookrelay` with a fresh data directory in the system temp dir, a free
    /// loopback port, `HOOKRELAY_LOG=warn` and a generated admin token; waits until ready.
    pub async fn spawn(options: SpawnOptions, client: &reqwest::Client) -> anyhow::Result<Self> {
        let binary = options.binary;
        if !binary.is_file() {
            bail!(
                "no gateway binary at {} (build it with `cargo build --release --bins`, or pass --gateway-bin)",
                binary.display()
            );
        }
        let work_dir = std::env::temp_dir().join(format!(
            "hookrelay-bench-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        let data_dir = work_dir.join("data");
        std::fs::create_dir_all(&work_dir).with_context(|| format!("create {}", work_dir.display()))?;
        let port = crate::sink::reserve_port()?;
        let admin_token = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let log_path = work_dir.join("hookrelay.log");
        let log = std::fs::File::create(&log_path).with_context(|| format!("create {}", log_path.display()))?;
        let mut command = Command::new(&binary);
        command
            .env("HOOKRELAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("HOOKRELAY_DATA_DIR", &data_dir)
            .env("HOOKRELAY_ADMIN_TOKEN", &admin_token)
            .env("HOOKRELAY_LOG", "warn")
            .env("HOOKRELAY_SHUTDOWN_GRACE_MS", "5000")
            .env_remove("HOOKRELAY_PUBLIC_URL")
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("log file")?)
            .stderr(log);
        // The benchmark measures throughput: no per-merchant ingest rate limit. Only
        // set where the binary knows the setting (it refuses unknown ones), so older
        // builds can be measured too.
        if supports_setting(&binary, "HOOKRELAY_INGEST_RATE_PER_SECOND") {
            command.env("HOOKRELAY_INGEST_RATE_PER_SECOND", "0");
        }
        for (key, value) in &options.env {
            command.env(key, value);
        }
        let child = command.spawn().with_context(|| format!("start {}", binary.display()))?;
        let pid = child.id();
        let mut spawned = Spawned {
            child,
            work_dir,
            keep: options.keep_data,
        };
        let base_url = format!("http://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = spawned.child.try_wait() {
                bail!("the gateway exited at start-up ({status}): {}", tail(&log_path));
            }
            let ready = client
                .get(format!("{base_url}/readyz"))
                .timeout(Duration::from_secs(1))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                break;
            }
            if started.elapsed() > READY_TIMEOUT {
                bail!(
                    "the gateway was not ready within {READY_TIMEOUT:?}: {}",
                    tail(&log_path)
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self {
            base_url,
            admin_token,
            pid: Some(pid),
            data_dir: Some(data_dir),
            process: Some(spawned),
        })
    }

    /// A gateway that is already running at a loopback URL.
    pub fn target(url: &str, admin_token: String, pid: Option<u32>, data_dir: Option<PathBuf>) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).with_context(|| format!("--target {url:?}"))?;
        let loopback = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(name)) => name == "localhost",
            None => false,
        };
        if !loopback || parsed.scheme() != "http" {
            bail!("--target must be an http:// URL on loopback (127.0.0.1), got {url}");
        }
        Ok(Self {
            base_url: url.trim_end_matches('/').to_owned(),
            admin_token,
            pid,
            data_dir,
            process: None,
        })
    }

    pub fn spawned(&self) -> bool {
        self.process.is_some()
    }

    /// Creates a merchant; answers its ingest URL (built from our base URL, token included).
    pub async fn create_merchant(&self, client: &reqwest::Client, id: &str) -> anyhow::Result<String> {
        let created = self
            .admin_post(client, "/api/v1/merchants", serde_json::json!({ "id": id }))
            .await?;
        let token = created["ingest_token"]
            .as_str()
            .with_context(|| format!("no ingest_token in {created}"))?;
        Ok(format!("{}/ingest/{id}?token={token}", self.base_url))
    }

    /// Registers an endpoint for `event_types` (`None`: every event).
    pub async fn create_endpoint(
        &self,
        client: &reqwest::Client,
        merchant: &str,
        url: &str,
        event_types: Option<&[&str]>,
    ) -> anyhow::Result<()> {
        let mut body = serde_json::json!({ "url": url, "description": "hookrelay-bench" });
        if let Some(types) = event_types {
            body["event_types"] = serde_json::json!(types);
        }
        self.admin_post(client, &format!("/api/v1/merchants/{merchant}/endpoints"), body)
            .await
            .map(drop)
    }

    pub async fn delete_merchant(&self, client: &reqwest::Client, merchant: &str) -> anyhow::Result<()> {
        let response = client
            .delete(format!("{}/api/v1/merchants/{merchant}", self.base_url))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .context("delete merchant")?;
        if !response.status().is_success() {
            bail!("DELETE merchant {merchant}: HTTP {}", response.status());
        }
        Ok(())
    }

    async fn admin_post(
        &self,
        client: &reqwest::Client,
        path: &str,
        body: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let response = client
            .post(format!("{}{path}", self.base_url))
            .bearer_auth(&self.admin_token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        let status = response.status();
        let text = response
            .text()
            .await
            .with_context(|| format!("POST {path}: read answer"))?;
        if status.as_u16() != 201 {
            bail!("POST {path}: HTTP {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("POST {path}: answer is not JSON: {text}"))
    }

    /// The gateway's `/metrics` text.
    pub async fn metrics(&self, client: &reqwest::Client) -> anyhow::Result<String> {
        let response = client
            .get(format!("{}/metrics", self.base_url))
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .context("GET /metrics")?;
        response.text().await.context("GET /metrics: read answer")
    }

    /// Stops a gateway the bench started: SIGTERM, then SIGKILL after [`STOP_TIMEOUT`].
    /// Answers how it ended. A targeted gateway is left running.
    pub async fn stop(mut self) -> Option<String> {
        let mut spawned = self.process.take()?;
        let pid = spawned.child.id();
        let signalled = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success());
        let started = Instant::now();
        while signalled && started.elapsed() < STOP_TIMEOUT {
            if let Ok(Some(status)) = spawned.child.try_wait() {
                return Some(format!(
                    "exited after SIGTERM in {:.1} s ({status})",
                    started.elapsed().as_secs_f64()
                ));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        drop(spawned);
        Some("killed: did not exit within 15 s of SIGTERM".into())
    }
}

/// Sum of the values of a metric over all its label sets (`name` or `name{...}` lines).
pub fn metric_sum(text: &str, name: &str, label_filter: Option<&str>) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else { continue };
        if !(rest.starts_with(' ') || rest.starts_with('{')) {
            continue;
        }
        if let Some(filter) = label_filter {
            if !rest.contains(filter) {
                continue;
            }
        }
        if let Some(value) = rest.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) {
            *found.get_or_insert(0.0) += value;
        }
    }
    found
}

/// Whether `hookrelay --help` (which lists every setting) names this one.
fn supports_setting(binary: &Path, name: &str) -> bool {
    Command::new(binary)
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|out| String::from_utf8_lossy(&out.stdout).contains(name))
}

/// The last lines of a log, for error messages.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(20);
    format!("log {}:\n{}", path.display(), lines[start..].join("\n"))
}

/// A binary beside the bench's own executable: `hookrelay` (the default gateway) or
/// `hookrelay-floor`.
pub fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .unwrap_or_else(|| PathBuf::from("target/release").join(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_sum_adds_label_sets_and_filters() {
        let text = "# HELP x\nhookrelay_queue_depth 12\nhookrelay_queue_depth_other 5\n\
                    hookrelay_delivery_attempts_total{outcome=\"success\"} 10\n\
                    hookrelay_delivery_attempts_total{outcome=\"connect_error\"} 3\n";
        assert_eq!(metric_sum(text, "hookrelay_queue_depth", None), Some(12.0));
        assert_eq!(metric_sum(text, "hookrelay_delivery_attempts_total", None), Some(13.0));
        assert_eq!(
            metric_sum(text, "hookrelay_delivery_attempts_total", Some("connect_error")),
            Some(3.0)
        );
        assert_eq!(metric_sum(text, "hookrelay_missing", None), None);
    }
}
