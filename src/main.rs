use std::process::ExitCode;

use clap::Parser as _;
use hookrelay::cli::{Cli, Command};
use hookrelay::config::Settings;
use hookrelay::startup::Application;
use tokio_util::sync::CancellationToken;

/// jemalloc: less CPU per allocation than glibc malloc, and less memory held than
/// mimalloc in the same run (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings (it reads this symbol at start-up; `_RJEM_MALLOC_CONF` in the
/// environment still overrides): two arenas are plenty for a handful of busy threads;
/// a background thread hands freed pages back to the kernel within a quarter second,
/// so RSS follows the load down instead of keeping its peak; and each thread's cache
/// keeps only objects up to 4 KiB, since the larger ones it held (sled's nodes and
/// buffers) were 15 MiB of peak RSS at full load for no CPU saved (docs/benchmarks.md).
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: &[u8; 85] =
    b"narenas:2,background_thread:true,dirty_decay_ms:250,muzzy_decay_ms:0,tcache_max:4096\0";

fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::load(cli.config.as_deref()) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("hookrelay: {error}");
            return ExitCode::from(2);
        }
    };
    if let Err(error) = hookrelay::telemetry::init_tracing(&settings.log_filter, settings.log_format) {
        eprintln!("hookrelay: {error:#}");
        return ExitCode::from(2);
    }
    hookrelay::telemetry::report_panics_briefly();
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => serve(settings),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(error = %format!("{error:#}"), "hookrelay stopped with an error");
            eprintln!("hookrelay: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(settings: Settings) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        let stop = CancellationToken::new();
        hookrelay::shutdown::cancel_on_signal(stop.clone());
        let app = Application::build(settings, stop).await?;
        tracing::info!(port = app.port(), "hookrelay serving");
        app.run_until_stopped().await
    });
    // Do not wait on store calls a failed disk may have left stuck.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}
