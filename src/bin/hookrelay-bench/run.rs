//! The modes. Each run: the limit phase first (unless skipped), then the gateway
//! phase of the mode, then the gateway is stopped (or, when targeted, the bench's
//! merchants are deleted from it).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::gateway::{metric_sum, Gateway, SpawnOptions};
use crate::load::{self, Destination, LoadOutcome, LoadPlan, Pace, Progress};
use crate::procstat::{self, CpuSplit, IoCounters, MachineCpu};
use crate::report::{BacklogHold, BacklogSummary, DeliverySummary, GatewayInfo, Report, Resources, RssGrowth};
use crate::sampler::{DepthSource, Sampler};
use crate::sink::{reserve_port, Recorder, Sink};
use crate::stats::{secs, Clock};
use crate::{Args, Mode};

/// Retry settings of a gateway started for backlog mode: short, so the queued
/// deliveries are retried within about two seconds of the sink coming up.
const BACKLOG_RETRY_ENV: [(&str, &str); 2] = [
    ("HOOKRELAY_RETRY_INITIAL_MS", "1000"),
    ("HOOKRELAY_RETRY_MAX_MS", "2000"),
];
/// A wait for deliveries gives up after this long without a new arrival.
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The one event type `--ingest-only` endpoints subscribe to; the load never sends it.
const UNSENT_TYPE: &str = "hookrelay-bench.unsent";

/// What every phase shares.
struct Bench {
    args: Args,
    clock: Clock,
    client: reqwest::Client,
    progress: Progress,
    recorder: Arc<Recorder>,
    sampler: Sampler,
    ticks_per_s: u64,
    run_id: u64,
}

pub async fn run(args: Args) -> anyhow::Result<Report> {
    let clock = Clock::start();
    let machine = procstat::machine_summary();
    let progress = Progress::default();
    let recorder = Recorder::new(clock);
    let sampler = Sampler::start(clock, progress.clone(), recorder.clone());
    let pool = match args.mode {
        Mode::Open => args.max_in_flight.min(1024),
        _ => args.senders,
    };
    let bench = Bench {
        client: load::http_client(pool)?,
        clock,
        progress,
        recorder,
        sampler,
        ticks_per_s: procstat::clock_ticks_per_second(),
        run_id: uuid::Uuid::new_v4().as_u64_pair().0,
        args,
    };
    let args = &bench.args;
    eprintln!(
        "hookrelay-bench: mode {}, load average {} (cores: {})",
        args.mode.name(),
        machine.loadavg_at_start,
        machine.cores
    );
    let mut report = Report {
        tool: format!("hookrelay-bench {}", env!("CARGO_PKG_VERSION")),
        mode: args.mode.name(),
        started_unix_s: clock.now_ns() / 1_000_000_000,
        machine,
        loadavg_at_end: String::new(),
        settings: settings_json(args),
        gateway: GatewayInfo {
            kind: if args.target.is_some() {
                "target"
            } else if args.floor {
                crate::report::FLOOR_KIND
            } else {
                "spawned"
            },
            binary_or_url: String::new(),
            extra_env: Vec::new(),
            stopped: None,
        },
        limit: None,
        ingest: None,
        ingest_vs_limit: None,
        delivery: None,
        resources: None,
        backlog: None,
        timeline: Vec::new(),
    };

    if args.mode == Mode::Limit || !args.skip_limit {
        report.limit = Some(bench.run_limit().await?);
    }
    if args.mode != Mode::Limit {
        let (gateway, extra_env) = bench.start_gateway().await?;
        report.gateway.binary_or_url = match &args.target {
            Some(url) => url.clone(),
            None => args.gateway_binary().display().to_string(),
        };
        report.gateway.extra_env = extra_env;
        bench.sampler.watch_gateway(
            gateway.pid,
            Some(DepthSource {
                client: bench.client.clone(),
                metrics_url: format!("{}/metrics", gateway.base_url),
            }),
        );
        let merchants = match args.mode {
            Mode::Backlog => bench.run_backlog(&gateway, &mut report).await,
            _ => bench.run_through(&gateway, &mut report).await,
        };
        bench.sampler.watch_gateway(None, None);
        let merchants = merchants?;
        if !gateway.spawned() {
            for merchant in &merchants {
                if let Err(error) = gateway.delete_merchant(&bench.client, merchant).await {
                    eprintln!("hookrelay-bench: cleanup: {error:#}");
                }
            }
        }
        report.gateway.stopped = gateway.stop().await;
    }

    let limit_rate = report.limit.as_ref().map(|l| l.rate_per_s).filter(|&r| r > 0.0);
    if let (Some(limit), Some(ingest)) = (limit_rate, &report.ingest) {
        report.ingest_vs_limit = Some(ingest.offered_rate_per_s.unwrap_or(ingest.rate_per_s) / limit);
    }
    if let (Some(limit), Some(delivery)) = (limit_rate, report.delivery.as_mut()) {
        delivery.rate_vs_limit = Some(delivery.rate_per_s / limit);
    }
    if let (Some(limit), Some(backlog)) = (limit_rate, report.backlog.as_mut()) {
        backlog.drain_vs_limit = Some(backlog.drain_rate_per_s / limit);
    }
    report.loadavg_at_end = procstat::loadavg();
    report.timeline = bench.sampler.finish().await;
    Ok(report)
}

impl Bench {
    /// The load generator straight at the sink: the loopback HTTP rate of this machine
    /// for the same bodies, senders and sink.
    async fn run_limit(&self) -> anyhow::Result<crate::load::LoadSummary> {
        let args = &self.args;
        let sink = Sink::start(0, args.sink_workers, self.recorder.clone())?;
        let urls = (0..args.merchants)
            .map(|m| sink.url(m * args.endpoints_per_merchant))
            .collect();
        eprintln!(
            "hookrelay-bench: limit phase: {} events at the sink {}",
            args.events, sink.addr
        );
        self.sampler.set_phase("limit");
        let plan = self.plan(Destination::Sink { urls: Arc::new(urls) }, self.closed(), args.events);
        let outcome = load::run(&self.client, &plan, self.clock, self.progress.clone()).await;
        self.sampler.set_phase("setup");
        sink.stop().await;
        let arrivals = self.recorder.take();
        let mut outcome = outcome?;
        if arrivals.len() as u64 != outcome.ok {
            eprintln!(
                "hookrelay-bench: limit phase: the sink counted {} requests for {} 2xx answers",
                arrivals.len(),
                outcome.ok
            );
        }
        Ok(outcome.summarize(None))
    }

    async fn start_gateway(&self) -> anyhow::Result<(Gateway, Vec<String>)> {
        let args = &self.args;
        if let Some(url) = &args.target {
            let token = args.admin_token.clone().context("--target needs --admin-token")?;
            return Ok((
                Gateway::target(url, token, args.gateway_pid, args.data_dir.clone())?,
                Vec::new(),
            ));
        }
        let mut env: Vec<(String, String)> = Vec::new();
        if args.mode == Mode::Backlog {
            env.extend(BACKLOG_RETRY_ENV.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        }
        if args.endpoints_per_merchant > 5 {
            env.push((
                "HOOKRELAY_MAX_ENDPOINTS_PER_MERCHANT".into(),
                args.endpoints_per_merchant.to_string(),
            ));
        }
        env.extend(args.gateway_env.iter().cloned());
        let described = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let options = SpawnOptions {
            binary: args.gateway_binary(),
            env,
            keep_data: args.keep_data,
        };
        let gateway = Gateway::spawn(options, &self.client).await?;
        eprintln!(
            "hookrelay-bench: gateway pid {} at {}",
            gateway.pid.unwrap_or(0),
            gateway.base_url
        );
        Ok((gateway, described))
    }

    /// Creates the merchants and their endpoints (`/hook/{merchant * per + k}` on the
    /// sink port); answers the merchant ids and ingest URLs.
    async fn register(&self, gateway: &Gateway, sink_port: u16) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let args = &self.args;
        let mut ids = Vec::new();
        let mut urls = Vec::new();
        for m in 0..args.merchants {
            let id = format!("bench-{:08x}-{m}", self.run_id as u32);
            urls.push(gateway.create_merchant(&self.client, &id).await?);
            for k in 0..args.endpoints_per_merchant {
                let endpoint = m * args.endpoints_per_merchant + k;
                let url = format!("http://127.0.0.1:{sink_port}{}{endpoint}", crate::sink::HOOK_PREFIX);
                let only = self.args.ingest_only.then_some(&[UNSENT_TYPE][..]);
                gateway.create_endpoint(&self.client, &id, &url, only).await?;
            }
            ids.push(id);
        }
        Ok((ids, urls))
    }

    /// Full and open modes: events through the gateway, then wait for every delivery.
    async fn run_through(&self, gateway: &Gateway, report: &mut Report) -> anyhow::Result<Vec<String>> {
        let args = &self.args;
        let sink = Sink::start(0, args.sink_workers, self.recorder.clone())?;
        let (merchants, ingest_urls) = self.register(gateway, sink.addr.port()).await?;
        self.recorder.take();
        let (pace, events, offered) = match args.mode {
            Mode::Open => (
                Pace::Open {
                    rate: args.rate,
                    max_in_flight: args.max_in_flight,
                },
                (args.rate * args.duration).round().max(1.0) as u64,
                Some(args.rate),
            ),
            _ => (self.closed(), args.events, None),
        };
        eprintln!(
            "hookrelay-bench: {} events to {} merchants × {} endpoints{}{}",
            events,
            args.merchants,
            args.endpoints_per_merchant,
            offered.map(|r| format!(" at {r}/s")).unwrap_or_default(),
            if args.ingest_only {
                " (ingest only: none subscribed)"
            } else {
                ""
            }
        );
        let before = Snapshot::take(gateway.pid, self.clock);
        let arrived_before = self.recorder.count();
        self.sampler.set_phase("ingest");
        let plan = self.plan(
            Destination::Gateway {
                ingest_urls: Arc::new(ingest_urls),
            },
            pace,
            events,
        );
        let mut outcome = load::run(&self.client, &plan, self.clock, self.progress.clone()).await?;
        self.sampler.set_phase("deliver");
        let expected = outcome.ok * u64::from(self.deliveries_per_event());
        let complete = self.wait_for_deliveries(gateway, arrived_before, expected).await;
        let after = Snapshot::take(gateway.pid, self.clock);
        self.sampler.set_phase("done");
        if !complete {
            eprintln!("hookrelay-bench: not every delivery arrived in time (see missing)");
        }
        let arrivals = self.recorder.take();
        sink.stop().await;
        let delivery = DeliverySummary::compute(
            &outcome.accepted,
            self.deliveries_per_event(),
            &arrivals,
            outcome.started_ns,
            outcome.last_answer_ns,
        );
        report.resources =
            Some(self.resources(gateway, &before, &after, &delivery, outcome.ok, &["ingest", "deliver"]));
        report.delivery = Some(delivery);
        report.ingest = Some(outcome.summarize(offered));
        Ok(merchants)
    }

    /// Waits until `expected` requests arrived since `arrived_before` and the gateway's
    /// queue is empty; gives up after `--max-wait-secs`, or a minute without arrivals.
    async fn wait_for_deliveries(&self, gateway: &Gateway, arrived_before: u64, expected: u64) -> bool {
        let started = Instant::now();
        let mut last_count = 0;
        let mut last_progress = Instant::now();
        loop {
            let count = self.recorder.count() - arrived_before;
            if count != last_count {
                last_count = count;
                last_progress = Instant::now();
            }
            if count >= expected && self.queue_depth(gateway).await.is_none_or(|depth| depth == 0) {
                return true;
            }
            if started.elapsed() > Duration::from_secs(self.args.max_wait_secs)
                || last_progress.elapsed() > STALL_TIMEOUT
            {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn queue_depth(&self, gateway: &Gateway) -> Option<u64> {
        let text = gateway.metrics(&self.client).await.ok()?;
        metric_sum(&text, "hookrelay_queue_depth", None).map(|v| v as u64)
    }

    /// Keeps the endpoints down for `--hold-secs` once everything is queued: the
    /// gateway holds the queue, retries and ingests nothing.
    async fn hold_backlog(&self, gateway: &Gateway, backlog: &mut BacklogSummary) {
        let hold = self.args.hold_secs;
        eprintln!("hookrelay-bench: endpoints stay down for {hold} s more");
        self.sampler.set_phase("hold");
        tokio::time::sleep(Duration::from_secs(hold)).await;
        let held = BacklogHold {
            secs: hold,
            rss_at_end_bytes: gateway.pid.and_then(procstat::rss_bytes),
            lowest_rss_bytes: self.sampler.lowest_rss(&["hold"]),
            peak_rss_bytes: self.sampler.peak_rss(&["hold"]),
            failed_attempts_at_end: match gateway.metrics(&self.client).await {
                Ok(text) => {
                    metric_sum(&text, "hookrelay_delivery_attempts_total", Some("connect_error")).map(|v| v as u64)
                }
                Err(_) => None,
            },
        };
        backlog.hold = Some(held);
    }

    /// Backlog mode: endpoints point at a closed port while the deliveries queue up;
    /// then (after the hold) the sink comes up on that port and the queue drains.
    async fn run_backlog(&self, gateway: &Gateway, report: &mut Report) -> anyhow::Result<Vec<String>> {
        let args = &self.args;
        let port = reserve_port()?;
        let (merchants, ingest_urls) = self.register(gateway, port).await?;
        let per = u64::from(args.endpoints_per_merchant);
        let events = args.deliveries / per;
        let mut backlog = BacklogSummary {
            retry_settings: if gateway.spawned() {
                // The bench's, unless `--gateway-env` set them (the last setting wins).
                BACKLOG_RETRY_ENV
                    .iter()
                    .map(|&(k, v)| {
                        let set = args.gateway_env.iter().rev().find(|(key, _)| key == k);
                        format!("{k}={}", set.map_or(v, |(_, value)| value.as_str()))
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            } else {
                "as configured on the target".into()
            },
            how_endpoints_were_down: format!("endpoints at closed port {port}"),
            events,
            ..Default::default()
        };
        let data_dir = gateway.data_dir.as_deref();
        backlog.disk_before = data_dir.map(procstat::disk_usage);
        eprintln!(
            "hookrelay-bench: backlog: {events} events × {per} endpoints = {} deliveries to queue (endpoints down)",
            events * per
        );
        self.sampler.set_phase("queue");
        let plan = self.plan(
            Destination::Gateway {
                ingest_urls: Arc::new(ingest_urls),
            },
            self.closed(),
            events,
        );
        let mut outcome: LoadOutcome = load::run(&self.client, &plan, self.clock, self.progress.clone()).await?;
        let queue_end_ns = self.clock.now_ns();
        backlog.queue_s = secs(queue_end_ns - outcome.started_ns);
        backlog.queue_ingest_rate_per_s = outcome.ok as f64 / backlog.queue_s.max(1e-9);
        if let Ok(text) = gateway.metrics(&self.client).await {
            backlog.queued_deliveries = metric_sum(&text, "hookrelay_queue_depth", None).map(|v| v as u64);
            backlog.failed_attempts_while_down = Some(
                metric_sum(&text, "hookrelay_delivery_attempts_total", Some("connect_error")).unwrap_or(0.0) as u64,
            );
        }
        backlog.rss_queued_bytes = gateway.pid.and_then(procstat::rss_bytes);
        backlog.disk_queued = data_dir.map(procstat::disk_usage);
        backlog.peak_rss_while_queueing_bytes = self.sampler.peak_rss(&["queue"]).max(backlog.rss_queued_bytes);
        backlog.rss_growth = RssGrowth::fit(&self.sampler.rss_by_depth("queue"));
        if let (Some(before), Some(queued), Some(depth)) =
            (backlog.disk_before, backlog.disk_queued, backlog.queued_deliveries)
        {
            backlog.disk_bytes_per_queued_delivery =
                Some(queued.allocated_bytes.saturating_sub(before.allocated_bytes) as f64 / depth.max(1) as f64);
        }
        eprintln!(
            "hookrelay-bench: queued {} deliveries in {:.1} s",
            backlog
                .queued_deliveries
                .map(|d| d.to_string())
                .unwrap_or_else(|| "?".into()),
            backlog.queue_s
        );
        if args.hold_secs > 0 {
            self.hold_backlog(gateway, &mut backlog).await;
        }
        eprintln!("hookrelay-bench: sink up on port {port}");

        let before = Snapshot::take(gateway.pid, self.clock);
        let arrived_before = self.recorder.count();
        self.sampler.set_phase("drain");
        let sink = Sink::start(port, args.sink_workers, self.recorder.clone())?;
        let up_ns = self.clock.now_ns();
        let expected = outcome.ok * per;
        backlog.drained = self.wait_for_deliveries(gateway, arrived_before, expected).await;
        let after = Snapshot::take(gateway.pid, self.clock);
        self.sampler.set_phase("done");
        let arrivals = self.recorder.take();
        sink.stop().await;
        let delivery = DeliverySummary::compute(
            &outcome.accepted,
            args.endpoints_per_merchant,
            &arrivals,
            outcome.started_ns,
            queue_end_ns,
        );
        let first = arrivals.iter().map(|a| a.at_ns).min();
        let last = arrivals.iter().map(|a| a.at_ns).max().unwrap_or(up_ns);
        backlog.first_arrival_after_up_s = first.map(|f| secs(f.saturating_sub(up_ns)));
        backlog.drain_s = secs(last.saturating_sub(up_ns));
        backlog.drain_rate_per_s = delivery.received as f64 / backlog.drain_s.max(1e-9);
        backlog.peak_rss_while_draining_bytes = self.sampler.peak_rss(&["drain"]);
        if let (Some(b), Some(a)) = (before.gateway_ticks, after.gateway_ticks) {
            let cpu_s = a.saturating_sub(b) as f64 / self.ticks_per_s as f64;
            backlog.drain_cpu_s_per_1000_deliveries = Some(cpu_s / delivery.received.max(1) as f64 * 1000.0);
        }
        backlog.disk_after_drain = data_dir.map(procstat::disk_usage);
        report.resources = Some(self.resources(
            gateway,
            &before,
            &after,
            &delivery,
            outcome.ok,
            &["queue", "hold", "drain"],
        ));
        report.delivery = Some(delivery);
        report.ingest = Some(outcome.summarize(None));
        report.backlog = Some(backlog);
        Ok(merchants)
    }

    fn resources(
        &self,
        gateway: &Gateway,
        before: &Snapshot,
        after: &Snapshot,
        delivery: &DeliverySummary,
        events: u64,
        phases: &[&str],
    ) -> Resources {
        let ticks = self.ticks_per_s as f64;
        let wall_s = secs(after.at_ns.saturating_sub(before.at_ns));
        let gateway_cpu_s = match (before.gateway_ticks, after.gateway_ticks) {
            (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / ticks),
            _ => None,
        };
        let gateway_io = match (before.io, after.io) {
            (Some(b), Some(a)) => Some(a.since(b)),
            _ => None,
        };
        let sink_cpu_s = after.own.sink_ticks.saturating_sub(before.own.sink_ticks) as f64 / ticks;
        let load_cpu_s = after.own.load_ticks.saturating_sub(before.own.load_ticks) as f64 / ticks;
        let machine_busy_s = after.machine.busy_ticks.saturating_sub(before.machine.busy_ticks) as f64 / ticks;
        let machine_total_s = after.machine.total_ticks.saturating_sub(before.machine.total_ticks) as f64 / ticks;
        Resources {
            wall_s,
            machine_busy_percent: 100.0 * machine_busy_s / machine_total_s.max(1e-9),
            machine_iowait_s: after.machine.iowait_ticks.saturating_sub(before.machine.iowait_ticks) as f64 / ticks,
            others_cpu_s: gateway_cpu_s.map(|g| (machine_busy_s - g - sink_cpu_s - load_cpu_s).max(0.0)),
            clock_ticks_per_s: self.ticks_per_s,
            gateway_cpu_s,
            gateway_cpu_s_per_1000_deliveries: gateway_cpu_s
                .filter(|_| delivery.received > 0)
                .map(|s| s / delivery.received as f64 * 1000.0),
            gateway_cpu_s_per_1000_events: gateway_cpu_s.filter(|_| events > 0).map(|s| s / events as f64 * 1000.0),
            gateway_cores: gateway_cpu_s.map(|s| s / wall_s.max(1e-9)),
            gateway_peak_rss_bytes: self.sampler.peak_rss(phases),
            gateway_start_rss_bytes: before.rss,
            gateway_end_rss_bytes: gateway.pid.and_then(procstat::rss_bytes),
            gateway_disk_write_bytes_per_event: gateway_io.map(|io| io.write_bytes as f64 / events.max(1) as f64),
            gateway_io,
            data_dir_at_end: gateway.data_dir.as_deref().map(procstat::disk_usage),
            sink_cpu_s,
            load_cpu_s,
        }
    }

    /// Deliveries each accepted event makes: one per endpoint of its merchant, none
    /// with `--ingest-only`.
    fn deliveries_per_event(&self) -> u32 {
        if self.args.ingest_only {
            0
        } else {
            self.args.endpoints_per_merchant
        }
    }

    fn closed(&self) -> Pace {
        Pace::Closed {
            senders: self.args.senders,
        }
    }

    fn plan(&self, destination: Destination, pace: Pace, events: u64) -> LoadPlan {
        LoadPlan {
            destination,
            pace,
            events,
            merchants: self.args.merchants as usize,
            payload_bytes: self.args.payload_bytes,
            max_duration: Duration::from_secs(self.args.max_send_secs),
            run_id: self.run_id,
        }
    }
}

/// CPU and I/O counters at one moment.
struct Snapshot {
    at_ns: u64,
    machine: MachineCpu,
    gateway_ticks: Option<u64>,
    io: Option<IoCounters>,
    own: CpuSplit,
    rss: Option<u64>,
}

impl Snapshot {
    fn take(pid: Option<u32>, clock: Clock) -> Self {
        Self {
            at_ns: clock.now_ns(),
            machine: procstat::machine_cpu(),
            gateway_ticks: pid.and_then(procstat::cpu_ticks),
            io: pid.and_then(procstat::io_counters),
            own: procstat::own_cpu_split(),
            rss: pid.and_then(procstat::rss_bytes),
        }
    }
}

fn settings_json(args: &Args) -> serde_json::Value {
    serde_json::json!({
        "events": args.events,
        "merchants": args.merchants,
        "endpoints_per_merchant": args.endpoints_per_merchant,
        "senders": args.senders,
        "payload_bytes": args.payload_bytes,
        "sink_workers": args.sink_workers,
        "skip_limit": args.skip_limit,
        "rate": (args.mode == Mode::Open).then_some(args.rate),
        "duration_s": (args.mode == Mode::Open).then_some(args.duration),
        "max_in_flight": (args.mode == Mode::Open).then_some(args.max_in_flight),
        "deliveries": (args.mode == Mode::Backlog).then_some(args.deliveries),
        "hold_secs": (args.mode == Mode::Backlog).then_some(args.hold_secs),
        "command_line": std::env::args().collect::<Vec<_>>().join(" "),
    })
}
