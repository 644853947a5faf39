//! hookrelay-bench: throughput and latency of a hookrelay gateway on this machine.
//!
//! # Layout
//! ```text
//! main.rs      the command line; runs one mode, prints the table, writes the JSON
//! run.rs       the modes: limit, full (closed loop), open (fixed rate), backlog
//! load.rs      the load generator: DashX-style events from concurrent senders
//! sink.rs      the capturing sink: answers 200, records arrival per webhook-id + path
//! gateway.rs   the gateway under test: started on a fresh data dir, or targeted
//! sampler.rs   every 100 ms: gateway RSS and CPU, progress, queue depth
//! procstat.rs  /proc readings: RSS, CPU ticks per thread, I/O; disk use
//! stats.rs     the shared clock, exact percentiles
//! report.rs    the JSON document and the printed table with the issue's targets
//! ```
//! Everything runs on loopback; every loop is bounded in count and time; whatever
//! the bench started (gateway, sink, scratch directory) it stops or removes.

mod gateway;
mod load;
mod procstat;
mod report;
mod run;
mod sampler;
mod sink;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, ValueEnum};

/// Load generator and capturing sink for hookrelay (see docs/benchmarks.md).
#[derive(Parser, Debug, Clone)]
#[command(name = "hookrelay-bench", version)]
pub struct Args {
    /// full: limit phase, then closed-loop ingest and delivery through the gateway.
    /// limit: the load generator straight at the sink only. open: a fixed offered
    /// rate. backlog: queue deliveries while endpoints are down, then drain them.
    #[arg(long, value_enum, default_value_t = Mode::Full)]
    pub mode: Mode,

    /// The gateway binary to start [default: `hookrelay` beside this executable].
    #[arg(long)]
    pub gateway_bin: Option<PathBuf>,
    /// Use a running gateway at this loopback URL instead of starting one.
    #[arg(long, requires = "admin_token")]
    pub target: Option<String>,
    /// Admin token of the --target gateway.
    #[arg(long)]
    pub admin_token: Option<String>,
    /// Process id of the --target gateway, for RSS and CPU figures.
    #[arg(long, requires = "target")]
    pub gateway_pid: Option<u32>,
    /// Data directory of the --target gateway, for disk figures.
    #[arg(long, requires = "target")]
    pub data_dir: Option<PathBuf>,
    /// Extra setting for the started gateway, KEY=VALUE (repeatable; wins over the bench's).
    #[arg(long = "gateway-env", value_parser = parse_key_value)]
    pub gateway_env: Vec<(String, String)>,
    /// Keep the started gateway's scratch directory (data and log).
    #[arg(long)]
    pub keep_data: bool,

    /// Events sent in the full run (and in the limit phase).
    #[arg(long, default_value_t = 20_000)]
    pub events: u64,
    #[arg(long, default_value_t = 20)]
    pub merchants: u32,
    #[arg(long, default_value_t = 5)]
    pub endpoints_per_merchant: u32,
    /// Concurrent senders of the closed loop.
    #[arg(long, default_value_t = 64)]
    pub senders: usize,
    /// Size of each event body in bytes (at least the sample's own, about 950).
    #[arg(long, default_value_t = 1024)]
    pub payload_bytes: usize,
    /// Sink worker threads.
    #[arg(long, default_value_t = 2)]
    pub sink_workers: usize,
    /// Skip the limit phase that normally runs first.
    #[arg(long)]
    pub skip_limit: bool,

    /// Open loop: offered events per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Open loop: seconds of sending.
    #[arg(long, default_value_t = 30.0)]
    pub duration: f64,
    /// Open loop: sends unanswered at once before the schedule waits (latency still
    /// counts from the scheduled time).
    #[arg(long, default_value_t = 2048)]
    pub max_in_flight: usize,

    /// Full and open modes: instead of a hookrelay gateway, start `hookrelay-floor` (beside
    /// this executable), a stand-in with hookrelay's own ingest parsing and delivery client
    /// but no store, which delivers each event once: what the HTTP work alone costs.
    #[arg(long, conflicts_with_all = ["target", "gateway_bin"])]
    pub floor: bool,

    /// Full and open modes: the endpoints subscribe only to an event type the load never
    /// sends, so nothing is delivered: what the gateway does with durable ingest alone.
    #[arg(long)]
    pub ingest_only: bool,
    /// Backlog: deliveries to queue (events = deliveries / endpoints per merchant).
    #[arg(long, default_value_t = 1_000_000)]
    pub deliveries: u64,
    /// Backlog: seconds the endpoints stay down once every delivery is queued, for the
    /// gateway's RSS when it holds the queue and no longer ingests (0: none).
    #[arg(long, default_value_t = 30)]
    pub hold_secs: u64,

    /// Longest a sending phase may take, in seconds.
    #[arg(long, default_value_t = 900)]
    pub max_send_secs: u64,
    /// Longest the bench waits for deliveries (or a drain), in seconds.
    #[arg(long, default_value_t = 900)]
    pub max_wait_secs: u64,

    /// Write the results as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

impl Args {
    /// The binary started as the gateway: `--gateway-bin`, `hookrelay-floor` with
    /// `--floor`, or `hookrelay`, both beside this executable.
    pub fn gateway_binary(&self) -> PathBuf {
        match &self.gateway_bin {
            Some(binary) => binary.clone(),
            None => gateway::sibling_binary(if self.floor { "hookrelay-floor" } else { "hookrelay" }),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    Full,
    Limit,
    Open,
    Backlog,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Limit => "limit",
            Mode::Open => "open",
            Mode::Backlog => "backlog",
        }
    }
}

fn parse_key_value(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').ok_or("expected KEY=VALUE")?;
    Ok((key.to_owned(), value.to_owned()))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Err(message) = check_args(&args) {
        eprintln!("hookrelay-bench: {message}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bench-load")
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("hookrelay-bench: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        tokio::select! {
            result = run::run(args.clone()) => result,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted; stopped what the bench started")),
        }
    });
    match result {
        Ok(report) => {
            println!("{}", report::render_table(&report));
            if let Some(path) = &args.json {
                let written = serde_json::to_vec_pretty(&report)
                    .map_err(anyhow::Error::from)
                    .and_then(|json| std::fs::write(path, json).map_err(anyhow::Error::from));
                if let Err(error) = written {
                    eprintln!("hookrelay-bench: cannot write {}: {error:#}", path.display());
                    return ExitCode::FAILURE;
                }
                println!("results written to {}", path.display());
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("hookrelay-bench: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn check_args(args: &Args) -> Result<(), String> {
    if args.events == 0 || args.merchants == 0 || args.endpoints_per_merchant == 0 || args.senders == 0 {
        return Err("--events, --merchants, --endpoints-per-merchant and --senders must be at least 1".into());
    }
    if args.sink_workers == 0 || args.max_in_flight == 0 {
        return Err("--sink-workers and --max-in-flight must be at least 1".into());
    }
    let rate_ok = args.rate > 0.0 && args.rate <= 1_000_000.0;
    let duration_ok = args.duration > 0.0 && args.duration <= 86_400.0;
    if !(rate_ok && duration_ok) {
        return Err("--rate must be in (0, 1000000] and --duration in (0, 86400]".into());
    }
    if args.ingest_only && !matches!(args.mode, Mode::Full | Mode::Open) {
        return Err("--ingest-only goes with --mode full or open".into());
    }
    if args.floor && !matches!(args.mode, Mode::Full | Mode::Open) {
        return Err("--floor goes with --mode full or open (the floor keeps no backlog)".into());
    }
    if args.hold_secs > 3_600 {
        return Err("--hold-secs must be at most 3600".into());
    }
    if args.mode == Mode::Backlog && args.deliveries < u64::from(args.endpoints_per_merchant) {
        return Err("--deliveries must be at least --endpoints-per-merchant".into());
    }
    Ok(())
}
