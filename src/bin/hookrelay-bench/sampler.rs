//! The sampler: every 100 ms, the gateway's RSS and CPU time, the answered ingests
//! and the deliveries arrived so far; every 500 ms the gateway's queue depth. The
//! samples make the timeline of the JSON report (and of the plot).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::gateway::metric_sum;
use crate::load::Progress;
use crate::procstat;
use crate::sink::Recorder;
use crate::stats::Clock;

const PERIOD: Duration = Duration::from_millis(100);
/// Queue depth is read every this many samples (it costs the gateway a request).
const DEPTH_EVERY: u64 = 5;

/// One point of the timeline.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Seconds since the bench started.
    pub t_s: f64,
    pub phase: &'static str,
    /// 2xx answers to sends so far (all phases).
    pub answered: u64,
    /// Requests the sink received so far (all phases).
    pub arrived: u64,
    pub gateway_rss_bytes: Option<u64>,
    pub gateway_cpu_ticks: Option<u64>,
    pub queue_depth: Option<u64>,
}

/// Where the sampler reads the gateway's queue depth.
pub struct DepthSource {
    pub client: reqwest::Client,
    /// `http://…/metrics`.
    pub metrics_url: String,
}

pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    phase: Arc<Mutex<&'static str>>,
    pid: Arc<Mutex<Option<u32>>>,
    depth: Arc<Mutex<Option<DepthSource>>>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    pub fn start(clock: Clock, progress: Progress, recorder: Arc<Recorder>) -> Self {
        let samples = Arc::new(Mutex::new(Vec::new()));
        let phase = Arc::new(Mutex::new("setup"));
        let pid = Arc::new(Mutex::new(None));
        let depth: Arc<Mutex<Option<DepthSource>>> = Arc::new(Mutex::new(None));
        let stop = CancellationToken::new();
        let origin_ns = clock.now_ns();
        let task = tokio::spawn({
            let (samples, phase, pid, depth, stop) =
                (samples.clone(), phase.clone(), pid.clone(), depth.clone(), stop.clone());
            async move {
                let mut ticker = tokio::time::interval(PERIOD);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let mut n: u64 = 0;
                // Bounded by the stop token, and by a day of samples.
                while n < 864_000 {
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = ticker.tick() => {}
                    }
                    let gateway_pid = *pid.lock().expect("sampler poisoned");
                    let queue_depth = if n % DEPTH_EVERY == 0 {
                        let source = depth
                            .lock()
                            .expect("sampler poisoned")
                            .as_ref()
                            .map(|s| (s.client.clone(), s.metrics_url.clone()));
                        match source {
                            Some((client, url)) => read_depth(&client, &url).await,
                            None => None,
                        }
                    } else {
                        None
                    };
                    let sample = Sample {
                        t_s: (clock.now_ns() - origin_ns) as f64 / 1e9,
                        phase: *phase.lock().expect("sampler poisoned"),
                        answered: progress.load(std::sync::atomic::Ordering::Relaxed),
                        arrived: recorder.count(),
                        gateway_rss_bytes: gateway_pid.and_then(procstat::rss_bytes),
                        gateway_cpu_ticks: gateway_pid.and_then(procstat::cpu_ticks),
                        queue_depth,
                    };
                    samples.lock().expect("sampler poisoned").push(sample);
                    n += 1;
                }
            }
        });
        Self {
            samples,
            phase,
            pid,
            depth,
            stop,
            task,
        }
    }

    pub fn set_phase(&self, phase: &'static str) {
        *self.phase.lock().expect("sampler poisoned") = phase;
    }

    pub fn watch_gateway(&self, pid: Option<u32>, depth: Option<DepthSource>) {
        *self.pid.lock().expect("sampler poisoned") = pid;
        *self.depth.lock().expect("sampler poisoned") = depth;
    }

    /// `(queue depth, RSS)` of every sample of `phase` that read both.
    pub fn rss_by_depth(&self, phase: &str) -> Vec<(u64, u64)> {
        self.samples
            .lock()
            .expect("sampler poisoned")
            .iter()
            .filter(|s| s.phase == phase)
            .filter_map(|s| Some((s.queue_depth?, s.gateway_rss_bytes?)))
            .collect()
    }

    /// Lowest RSS sampled during the given phases.
    pub fn lowest_rss(&self, phases: &[&str]) -> Option<u64> {
        self.rss_of(phases).min()
    }

    /// Highest RSS sampled during the given phases.
    pub fn peak_rss(&self, phases: &[&str]) -> Option<u64> {
        self.rss_of(phases).max()
    }

    /// The RSS readings of the given phases.
    fn rss_of(&self, phases: &[&str]) -> std::vec::IntoIter<u64> {
        let samples = self.samples.lock().expect("sampler poisoned");
        let rss: Vec<u64> = samples
            .iter()
            .filter(|s| phases.contains(&s.phase))
            .filter_map(|s| s.gateway_rss_bytes)
            .collect();
        rss.into_iter()
    }

    pub async fn finish(self) -> Vec<Sample> {
        self.stop.cancel();
        let _ = self.task.await;
        std::mem::take(&mut *self.samples.lock().expect("sampler poisoned"))
    }
}

async fn read_depth(client: &reqwest::Client, metrics_url: &str) -> Option<u64> {
    let response = client
        .get(metrics_url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?;
    let text = response.text().await.ok()?;
    metric_sum(&text, "hookrelay_queue_depth", None).map(|v| v as u64)
}
