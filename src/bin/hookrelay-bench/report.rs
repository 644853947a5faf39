//! The results of a run: the JSON document (`--json FILE`) and the table printed at
//! the end, with the targets beside the figures they apply to.

use std::collections::HashMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::load::{Accepted, LoadSummary};
use crate::procstat::{DiskUsage, IoCounters, Machine};
use crate::sampler::Sample;
use crate::sink::Arrival;
use crate::stats::{line_fit, secs, Percentiles};

#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: String,
    pub mode: &'static str,
    pub started_unix_s: u64,
    pub machine: Machine,
    pub loadavg_at_end: String,
    pub settings: serde_json::Value,
    pub gateway: GatewayInfo,
    /// The load generator straight at the sink: the loopback HTTP limit of this machine.
    pub limit: Option<LoadSummary>,
    /// The load generator at the gateway (closed loop in `full`, open loop in `open`).
    pub ingest: Option<LoadSummary>,
    pub ingest_vs_limit: Option<f64>,
    pub delivery: Option<DeliverySummary>,
    pub resources: Option<Resources>,
    pub backlog: Option<BacklogSummary>,
    pub timeline: Vec<Sample>,
}

/// `GatewayInfo::kind` of a run against `hookrelay-floor` (`--floor`).
pub const FLOOR_KIND: &str = "floor (no store)";

#[derive(Debug, Serialize)]
pub struct GatewayInfo {
    /// `spawned`, `target` or [`FLOOR_KIND`].
    pub kind: &'static str,
    pub binary_or_url: String,
    /// Settings the bench gave a spawned gateway beyond listen, data dir, token, log.
    pub extra_env: Vec<String>,
    pub stopped: Option<String>,
}

/// What the sink received for the accepted events.
#[derive(Debug, Serialize)]
pub struct DeliverySummary {
    /// Accepted events × their merchant's endpoints.
    pub expected: u64,
    /// Distinct (event, endpoint) pairs received among the expected.
    pub received: u64,
    /// Receipts beyond the first of a pair.
    pub duplicates: u64,
    pub missing: u64,
    /// Receipts for pairs not expected (not counted in `received`).
    pub unexpected: u64,
    /// From the first send of the phase to the last arrival.
    pub all_arrived_s: f64,
    /// From the last ingest answer to the last arrival.
    pub after_last_ingest_s: f64,
    /// From the first arrival to the last.
    pub first_to_last_s: f64,
    /// `received` over `first_to_last_s`.
    pub rate_per_s: f64,
    pub rate_vs_limit: Option<f64>,
    /// Send (or scheduled send) → first arrival at the sink, per pair.
    pub end_to_end: Percentiles,
}

impl DeliverySummary {
    /// Matches arrivals against accepted events. `phase_start_ns`: first send;
    /// `last_ingest_ns`: last answer.
    pub fn compute(
        accepted: &[Accepted],
        endpoints_per_merchant: u32,
        arrivals: &[Arrival],
        phase_start_ns: u64,
        last_ingest_ns: u64,
    ) -> Self {
        // (event digest, endpoint) → (t0, arrivals, first arrival)
        let mut pairs: HashMap<(u64, u32), (u64, u32, u64)> =
            HashMap::with_capacity(accepted.len() * endpoints_per_merchant as usize);
        for event in accepted {
            for k in 0..endpoints_per_merchant {
                pairs.insert(
                    (event.id, event.merchant * endpoints_per_merchant + k),
                    (event.t0_ns, 0, 0),
                );
            }
        }
        let mut unexpected = 0;
        for arrival in arrivals {
            match pairs.get_mut(&(arrival.id, arrival.endpoint)) {
                Some(pair) => {
                    if pair.1 == 0 || arrival.at_ns < pair.2 {
                        pair.2 = arrival.at_ns;
                    }
                    pair.1 += 1;
                }
                None => unexpected += 1,
            }
        }
        let mut received = 0;
        let mut duplicates = 0;
        let mut e2e = Vec::with_capacity(pairs.len());
        for &(t0, count, first) in pairs.values() {
            if count > 0 {
                received += 1;
                duplicates += u64::from(count - 1);
                e2e.push(first.saturating_sub(t0));
            }
        }
        let first_arrival = arrivals.iter().map(|a| a.at_ns).min().unwrap_or(0);
        let last_arrival = arrivals.iter().map(|a| a.at_ns).max().unwrap_or(0);
        let first_to_last_s = secs(last_arrival.saturating_sub(first_arrival));
        Self {
            expected: pairs.len() as u64,
            received,
            duplicates,
            missing: pairs.len() as u64 - received,
            unexpected,
            all_arrived_s: secs(last_arrival.saturating_sub(phase_start_ns)),
            after_last_ingest_s: secs(last_arrival.saturating_sub(last_ingest_ns)),
            first_to_last_s,
            rate_per_s: if first_to_last_s > 0.0 {
                received as f64 / first_to_last_s
            } else {
                0.0
            },
            rate_vs_limit: None,
            end_to_end: Percentiles::of(&mut e2e),
        }
    }
}

/// The gateway's (and the bench's) resources over the measured phase.
#[derive(Debug, Default, Serialize)]
pub struct Resources {
    pub wall_s: f64,
    /// The whole machine's CPU use over the phase (all cores).
    pub machine_busy_percent: f64,
    pub machine_iowait_s: f64,
    /// CPU time of everything else on the machine (other users, the kernel's threads):
    /// a run where this is large was disturbed.
    pub others_cpu_s: Option<f64>,
    pub clock_ticks_per_s: u64,
    pub gateway_cpu_s: Option<f64>,
    pub gateway_cpu_s_per_1000_deliveries: Option<f64>,
    /// Everything the gateway did per event accepted: ingest and its deliveries.
    pub gateway_cpu_s_per_1000_events: Option<f64>,
    /// Average cores the gateway used over the phase.
    pub gateway_cores: Option<f64>,
    pub gateway_peak_rss_bytes: Option<u64>,
    /// When the measured phase began (in backlog mode: when the sink came up).
    pub gateway_start_rss_bytes: Option<u64>,
    pub gateway_end_rss_bytes: Option<u64>,
    pub gateway_io: Option<IoCounters>,
    pub gateway_disk_write_bytes_per_event: Option<f64>,
    pub data_dir_at_end: Option<DiskUsage>,
    /// The bench's own sink threads and load generator over the phase.
    pub sink_cpu_s: f64,
    pub load_cpu_s: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct BacklogSummary {
    pub retry_settings: String,
    pub how_endpoints_were_down: String,
    pub events: u64,
    pub queue_s: f64,
    pub queue_ingest_rate_per_s: f64,
    pub queued_deliveries: Option<u64>,
    pub failed_attempts_while_down: Option<u64>,
    pub rss_queued_bytes: Option<u64>,
    pub peak_rss_while_queueing_bytes: Option<u64>,
    pub rss_growth: Option<RssGrowth>,
    pub disk_before: Option<DiskUsage>,
    pub disk_queued: Option<DiskUsage>,
    pub disk_bytes_per_queued_delivery: Option<f64>,
    /// The endpoints kept down after everything was queued (`--hold-secs`).
    pub hold: Option<BacklogHold>,
    /// Sink up → queue depth 0.
    pub drain_s: f64,
    /// Sink up → first delivery arrived.
    pub first_arrival_after_up_s: Option<f64>,
    /// Deliveries received over `drain_s`.
    pub drain_rate_per_s: f64,
    pub drain_vs_limit: Option<f64>,
    pub drained: bool,
    pub peak_rss_while_draining_bytes: Option<u64>,
    pub drain_cpu_s_per_1000_deliveries: Option<f64>,
    pub disk_after_drain: Option<DiskUsage>,
}

/// The gateway holding its queue, ingesting nothing, endpoints still down.
#[derive(Debug, Default, Serialize)]
pub struct BacklogHold {
    pub secs: u64,
    pub rss_at_end_bytes: Option<u64>,
    pub lowest_rss_bytes: Option<u64>,
    pub peak_rss_bytes: Option<u64>,
    /// Failed attempts counted by the end of the hold (queueing included).
    pub failed_attempts_at_end: Option<u64>,
}

/// How the gateway's RSS grew with its queue while the endpoints were down: the
/// least-squares line through the sampler's `(queue depth, RSS)` points, from a quarter
/// of the final depth on (start-up and the first claims left out).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct RssGrowth {
    pub bytes_per_queued_delivery: f64,
    pub intercept_bytes: f64,
    pub points: usize,
}

impl RssGrowth {
    pub fn fit(samples: &[(u64, u64)]) -> Option<Self> {
        let deepest = samples.iter().map(|s| s.0).max()?;
        let points: Vec<(f64, f64)> = samples
            .iter()
            .filter(|s| s.0 >= deepest / 4)
            .map(|&(depth, rss)| (depth as f64, rss as f64))
            .collect();
        let (intercept, slope) = line_fit(&points)?;
        Some(Self {
            bytes_per_queued_delivery: slope,
            intercept_bytes: intercept,
            points: points.len(),
        })
    }

    /// Deliveries that could be queued within `rss_bytes` at this rate of growth.
    pub fn queued_within(&self, rss_bytes: u64) -> Option<u64> {
        let room = rss_bytes as f64 - self.intercept_bytes;
        (self.bytes_per_queued_delivery > 0.0 && room > 0.0).then(|| (room / self.bytes_per_queued_delivery) as u64)
    }
}

/// The printed table: `metric | value | vs limit | target`.
pub fn render_table(report: &Report) -> String {
    let mut rows: Vec<[String; 4]> = Vec::new();
    let mut row = |metric: &str, value: String, ratio: Option<f64>, target: &str| {
        rows.push([
            metric.to_owned(),
            value,
            ratio.map(|r| format!("{:.0}%", r * 100.0)).unwrap_or_default(),
            target.to_owned(),
        ]);
    };
    let limit_rate = report.limit.as_ref().map(|l| l.rate_per_s);
    let vs = |rate: f64| limit_rate.filter(|&l| l > 0.0).map(|l| rate / l);
    if let Some(limit) = &report.limit {
        row(
            "limit: sink alone, requests/s",
            format!("{:.0}", limit.rate_per_s),
            None,
            "(reference)",
        );
        row("limit: latency p50 / p99", pair_ms(&limit.latency), None, "");
    }
    if let Some(ingest) = &report.ingest {
        let open = ingest.offered_rate_per_s;
        match open {
            Some(rate) => row(
                "open loop: offered events/s",
                format!("{rate:.0} (achieved {:.0})", ingest.rate_per_s),
                vs(rate),
                "",
            ),
            None if report.mode == "backlog" => {}
            None => row(
                "ingest events/s (2xx)",
                format!("{:.0}", ingest.rate_per_s),
                vs(ingest.rate_per_s),
                &mark(">= 5,000 with 64 senders", ingest.rate_per_s >= 5000.0),
            ),
        }
        let p99_target = match open {
            Some(rate) if rate >= 2500.0 => mark("p99 <= 10 ms at 2,500/s", ingest.latency.p99_ms <= 10.0),
            _ => String::new(),
        };
        row(
            "ingest latency p50 / p99 / p99.9",
            triple_ms(&ingest.latency),
            None,
            &p99_target,
        );
        if let Some(lag) = &ingest.send_lag {
            row(
                "open loop: send lag p50 / p99",
                pair_ms(lag),
                None,
                "(generator lateness)",
            );
        }
        let failed = ingest.non_2xx.values().sum::<u64>() + ingest.errors;
        row(
            "ingest non-2xx / errors",
            format!("{failed} of {}", ingest.attempted),
            None,
            &ingest
                .first_problem
                .as_deref()
                .map(|p| format!("first: {}", p.chars().take(90).collect::<String>()))
                .unwrap_or_default(),
        );
    }
    let backlog = report.mode == "backlog";
    if report.delivery.as_ref().is_some_and(|d| !backlog && d.expected == 0) {
        row(
            "deliveries",
            "none: no endpoint subscribed (--ingest-only)".into(),
            None,
            "",
        );
    }
    if let Some(d) = report.delivery.as_ref().filter(|d| !backlog && d.expected > 0) {
        let at_1000 = report
            .ingest
            .as_ref()
            .and_then(|i| i.offered_rate_per_s)
            .is_some_and(|r| r <= 1000.0);
        row(
            "deliveries/s (first→last arrival)",
            format!("{:.0}", d.rate_per_s),
            d.rate_vs_limit,
            &if report.ingest.as_ref().is_some_and(|i| i.offered_rate_per_s.is_none()) {
                mark(">= 20,000", d.rate_per_s >= 20000.0)
            } else {
                String::new()
            },
        );
        row(
            "all deliveries arrived after",
            format!(
                "{:.2} s ({:.2} s after last ingest)",
                d.all_arrived_s, d.after_last_ingest_s
            ),
            None,
            "",
        );
        row(
            "end-to-end p50 / p99",
            pair_ms(&d.end_to_end),
            None,
            &if at_1000 {
                mark(
                    "p50 <= 3 ms, p99 <= 15 ms at 1,000/s",
                    d.end_to_end.p50_ms <= 3.0 && d.end_to_end.p99_ms <= 15.0,
                )
            } else {
                String::new()
            },
        );
        row(
            "received / duplicates / missing",
            format!(
                "{} / {} / {} (unexpected {})",
                d.received, d.duplicates, d.missing, d.unexpected
            ),
            None,
            &mark("0 duplicates, 0 missing", d.duplicates == 0 && d.missing == 0),
        );
    }
    if let Some(d) = report.delivery.as_ref().filter(|_| backlog) {
        row(
            "received / duplicates / missing",
            format!(
                "{} / {} / {} (unexpected {})",
                d.received, d.duplicates, d.missing, d.unexpected
            ),
            None,
            &mark("0 duplicates, 0 missing", d.duplicates == 0 && d.missing == 0),
        );
    }
    if let Some(r) = &report.resources {
        if let Some(cpu) = r.gateway_cpu_s_per_1000_deliveries.filter(|_| !backlog) {
            row(
                "gateway CPU-s per 1,000 deliveries",
                format!("{cpu:.3}"),
                None,
                &mark("<= 0.1", cpu <= 0.1),
            );
        }
        if let Some(cpu) = r.gateway_cpu_s_per_1000_events.filter(|_| !backlog) {
            row(
                "gateway CPU-s per 1,000 events (with their deliveries)",
                format!("{cpu:.3}"),
                None,
                "",
            );
        }
        if let (Some(cpu), Some(cores)) = (r.gateway_cpu_s, r.gateway_cores) {
            row(
                "CPU-s gateway / sink / load gen",
                format!(
                    "{cpu:.1} / {:.1} / {:.1} over {:.1} s",
                    r.sink_cpu_s, r.load_cpu_s, r.wall_s
                ),
                None,
                &format!("gateway avg {cores:.2} cores"),
            );
        }
        row(
            "machine CPU busy / iowait",
            format!("{:.0}% / {:.1} s", r.machine_busy_percent, r.machine_iowait_s),
            None,
            &r.others_cpu_s
                .map(|s| format!("other processes {s:.1} CPU-s"))
                .unwrap_or_default(),
        );
        if let Some(rss) = r.gateway_peak_rss_bytes {
            row(
                "gateway peak RSS",
                mib(rss),
                None,
                &mark("<= 100 MiB", rss <= 100 << 20),
            );
        }
        if let (Some(start), Some(end), false) = (r.gateway_start_rss_bytes, r.gateway_end_rss_bytes, backlog) {
            // Everything the run stored is still kept (retention is days): what is
            // left of the growth at the end is what the stored events hold.
            let events = report.ingest.as_ref().map_or(0, |i| i.ok_2xx);
            row(
                "gateway RSS before / at end",
                format!("{} / {}", mib(start), mib(end)),
                None,
                &format!(
                    "{:.0} B more per event stored",
                    end.saturating_sub(start) as f64 / events.max(1) as f64
                ),
            );
        }
        if let Some(io) = &r.gateway_io {
            row(
                "gateway bytes written to storage",
                format!(
                    "{} ({}/event)",
                    mib(io.write_bytes),
                    r.gateway_disk_write_bytes_per_event
                        .map(|b| format!("{b:.0} B"))
                        .unwrap_or_default()
                ),
                None,
                "",
            );
        }
        if let Some(disk) = &r.data_dir_at_end {
            row("data dir at end (du)", mib(disk.allocated_bytes), None, "");
        }
    }
    if let Some(b) = &report.backlog {
        row(
            "backlog: retry settings",
            b.retry_settings.clone(),
            None,
            &b.how_endpoints_were_down,
        );
        row(
            "backlog: events queued at events/s",
            format!("{} at {:.0}/s", b.events, b.queue_ingest_rate_per_s),
            vs(b.queue_ingest_rate_per_s),
            "",
        );
        row(
            "backlog: queue depth / failed attempts",
            format!("{} / {}", opt(b.queued_deliveries), opt(b.failed_attempts_while_down)),
            None,
            "",
        );
        if let Some(rss) = b.peak_rss_while_queueing_bytes {
            let queued = b.queued_deliveries.unwrap_or(0);
            row(
                "backlog: RSS queued / peak while queueing",
                format!("{} / {}", b.rss_queued_bytes.map(mib).unwrap_or_default(), mib(rss)),
                None,
                &mark(
                    &format!("<= 100 MiB with 1,000,000 queued (here {queued})"),
                    rss <= 100 << 20,
                ),
            );
        }
        if let Some(hold) = &b.hold {
            let at_end = hold.rss_at_end_bytes;
            row(
                &format!("backlog: RSS after {} s held / low / peak", hold.secs),
                format!(
                    "{} / {} / {}",
                    at_end.map(mib).unwrap_or_default(),
                    hold.lowest_rss_bytes.map(mib).unwrap_or_default(),
                    hold.peak_rss_bytes.map(mib).unwrap_or_default()
                ),
                None,
                &at_end
                    .map(|rss| mark("<= 100 MiB, nothing ingested, all queued", rss <= 100 << 20))
                    .unwrap_or_default(),
            );
            row(
                "backlog: failed attempts by end of hold",
                opt(hold.failed_attempts_at_end),
                None,
                "",
            );
        }
        if let Some(growth) = &b.rss_growth {
            row(
                "backlog: RSS growth per queued delivery",
                format!(
                    "{:.0} B on {} ({} samples)",
                    growth.bytes_per_queued_delivery,
                    mib(growth.intercept_bytes.max(0.0) as u64),
                    growth.points
                ),
                None,
                &growth
                    .queued_within(100 << 20)
                    .map(|n| format!("100 MiB holds about {n} queued"))
                    .unwrap_or_default(),
            );
        }
        if let (Some(disk), Some(per)) = (&b.disk_queued, b.disk_bytes_per_queued_delivery) {
            row(
                "backlog: data dir queued / per delivery",
                format!("{} / {per:.0} B", mib(disk.allocated_bytes)),
                None,
                "",
            );
        }
        row(
            "backlog: drain deliveries/s",
            format!(
                "{:.0} in {:.1} s{}",
                b.drain_rate_per_s,
                b.drain_s,
                if b.drained { "" } else { " (NOT drained)" }
            ),
            b.drain_vs_limit,
            "",
        );
        if let Some(first) = b.first_arrival_after_up_s {
            row(
                "backlog: first delivery after sink up",
                format!("{first:.2} s"),
                None,
                "(the next probe: within the first retry delay)",
            );
        }
        if let Some(rss) = b.peak_rss_while_draining_bytes {
            row(
                "backlog: peak RSS while draining",
                mib(rss),
                None,
                &mark("<= 100 MiB", rss <= 100 << 20),
            );
        }
        if let Some(cpu) = b.drain_cpu_s_per_1000_deliveries {
            row(
                "backlog: drain CPU-s per 1,000",
                format!("{cpu:.3}"),
                None,
                &mark("<= 0.1", cpu <= 0.1),
            );
        }
    }

    let widths: Vec<usize> = (0..4)
        .map(|c| {
            rows.iter()
                .map(|r| r[c].chars().count())
                .max()
                .unwrap_or(0)
                .max(HEADER[c].len())
        })
        .collect();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "hookrelay-bench, mode {}: load {} at start, {} at end; {} cores, {}",
        report.mode,
        report.machine.loadavg_at_start,
        report.loadavg_at_end,
        report.machine.cores,
        report.machine.cpu_model
    );
    if report.gateway.kind == FLOOR_KIND {
        let _ = writeln!(
            out,
            "measured: hookrelay-floor, the gateway's HTTP work with NO store; the targets are the gateway's, shown for comparison"
        );
    }
    let line = |out: &mut String, cells: [&str; 4]| {
        let _ = writeln!(
            out,
            "| {:<w0$} | {:>w1$} | {:>w2$} | {:<w3$} |",
            cells[0],
            cells[1],
            cells[2],
            cells[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3]
        );
    };
    line(&mut out, HEADER);
    let _ = writeln!(
        out,
        "|{}|{}|{}|{}|",
        "-".repeat(widths[0] + 2),
        "-".repeat(widths[1] + 2),
        "-".repeat(widths[2] + 2),
        "-".repeat(widths[3] + 2)
    );
    for r in &rows {
        line(&mut out, [&r[0], &r[1], &r[2], &r[3]]);
    }
    out
}

const HEADER: [&str; 4] = ["metric", "value", "vs limit", "target"];

fn mark(target: &str, met: bool) -> String {
    format!("{target}: {}", if met { "met" } else { "NOT met" })
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn opt(value: Option<u64>) -> String {
    value.map(|v| v.to_string()).unwrap_or_else(|| "?".into())
}

fn pair_ms(p: &Percentiles) -> String {
    format!("{:.2} / {:.2} ms", p.p50_ms, p.p99_ms)
}

fn triple_ms(p: &Percentiles) -> String {
    format!("{:.2} / {:.2} / {:.2} ms", p.p50_ms, p.p99_ms, p.p999_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rss_growth_is_fitted_past_the_first_quarter_of_the_queue() {
        // Start-up noise below a quarter of the final depth, then 80 bytes per delivery on 60 MiB.
        let mut samples = vec![(1_000, 10 << 20), (100_000, 90 << 20)];
        samples.extend((1..=30u64).map(|k| (k * 40_000, (60 << 20) + 80 * k * 40_000)));
        let growth = RssGrowth::fit(&samples).unwrap();
        assert_eq!(growth.points, 23); // k = 8..=30: depths from 320,000 of 1,200,000
        assert!((growth.bytes_per_queued_delivery - 80.0).abs() < 1e-6, "{growth:?}");
        assert!((growth.intercept_bytes - (60 << 20) as f64).abs() < 1.0, "{growth:?}");
        assert_eq!(growth.queued_within(100 << 20), Some((40 << 20) / 80));
        assert_eq!(growth.queued_within(50 << 20), None);
        assert!(RssGrowth::fit(&[(5, 1), (5, 2)]).is_none());
    }

    #[test]
    fn with_no_endpoint_subscribed_nothing_is_expected_or_missing() {
        let accepted = [Accepted {
            id: 1,
            merchant: 0,
            t0_ns: 100,
        }];
        let stray = [Arrival {
            id: 1,
            endpoint: 0,
            at_ns: 150,
        }];
        let d = DeliverySummary::compute(&accepted, 0, &stray, 100, 200);
        assert_eq!((d.expected, d.received, d.missing, d.unexpected), (0, 0, 0, 1));
        assert_eq!(d.rate_per_s, 0.0);
    }

    #[test]
    fn deliveries_are_matched_per_event_and_endpoint() {
        let accepted = [
            Accepted {
                id: 1,
                merchant: 0,
                t0_ns: 100,
            },
            Accepted {
                id: 2,
                merchant: 1,
                t0_ns: 200,
            },
        ];
        let arrivals = [
            Arrival {
                id: 1,
                endpoint: 0,
                at_ns: 150,
            },
            Arrival {
                id: 1,
                endpoint: 1,
                at_ns: 160,
            },
            Arrival {
                id: 1,
                endpoint: 1,
                at_ns: 170,
            },
            Arrival {
                id: 2,
                endpoint: 2,
                at_ns: 260,
            },
            Arrival {
                id: 2,
                endpoint: 0,
                at_ns: 270,
            },
        ];
        let d = DeliverySummary::compute(&accepted, 2, &arrivals, 100, 200);
        assert_eq!(d.expected, 4);
        assert_eq!(d.received, 3);
        assert_eq!(d.duplicates, 1);
        assert_eq!(d.missing, 1);
        assert_eq!(d.unexpected, 1);
        assert_eq!(d.end_to_end.count, 3);
    }
}
