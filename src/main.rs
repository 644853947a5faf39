use std::process::ExitCode;

use clap::Parser as _;
use hookrelay::cli::{Cli, Command};
use hookrelay::config::Settings;
use hookrelay::startup::Application;
use tokio_util::sync::CancellationToken;

hookrelay::use_jemalloc!();

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
