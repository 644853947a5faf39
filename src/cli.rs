//! Command line: `hookrelay [--config FILE] [serve]`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::config::Settings;

#[derive(Debug, Parser)]
#[command(name = "hookrelay", version, about = "Webhook relay and fan-out gateway", after_help = Settings::help_text())]
pub struct Cli {
    /// TOML file with settings (keys as the variables below, lower-case, without HOOKRELAY_).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve ingest, admin API, metrics and health, and deliver events (the default).
    Serve,
}
