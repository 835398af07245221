//! Command line (SPEC §6). Exit codes: 0 ok; 1 the command failed; 2 bad configuration or usage.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Settings;
use crate::startup::Application;

#[derive(Parser, Debug)]
#[command(
    name = "salesbot-sync",
    version,
    about = "Keeps Shopify store data and Facebook Page / Messenger conversations fresh in S3-compatible storage",
    long_about = "Keeps Shopify store data and Facebook Page / Messenger conversations fresh in \
                  S3-compatible storage (DigitalOcean Spaces), per merchant.\n\n\
                  Configuration comes from the environment and an optional .env file; \
                  see `salesbot-sync check-config`."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the HTTP service, the event workers and the scheduler (the default).
    Serve,
    /// Print the effective configuration with secrets masked, and check it.
    CheckConfig,
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("salesbot-sync: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command.unwrap_or(Command::Serve) {
        Command::CheckConfig => {
            print!("{}", settings.describe());
            for name in &settings.generated_secrets {
                println!(
                    "warning: {name} is not set; a throw-away value is used (development only)"
                );
            }
            for w in &settings.warnings {
                println!("warning: {w}");
            }
            ExitCode::SUCCESS
        }
        Command::Serve => {
            crate::telemetry::init(settings.log_format);
            run_async(async move {
                let app = Application::build(settings).await?;
                app.run_until_stopped().await
            })
        }
    }
}

fn run_async(fut: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("salesbot-sync: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(fut) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of causes, no backtrace.
            eprintln!("salesbot-sync: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}
