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
    /// Re-fetch connected shops now and upload what changed (all of them by default).
    Poll {
        /// Poll only this shop (`name` or `name.myshopify.com`).
        #[arg(long)]
        shop: Option<String>,
    },
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
        Command::Poll { shop } => {
            crate::telemetry::init(settings.log_format);
            run_async(poll(settings, shop))
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

async fn poll(settings: Settings, shop: Option<String>) -> anyhow::Result<()> {
    use crate::objects::keys::ShopDomain;
    if settings.shopify.is_none() {
        anyhow::bail!("Shopify is not configured: set SHOPIFY_API_KEY and SHOPIFY_API_SECRET");
    }
    let state = crate::state::AppState::build(settings)?;
    let report = match shop {
        Some(s) => {
            let shop = ShopDomain::normalize(&s)?;
            let mut r = crate::shopify::poll::PollReport::default();
            match crate::shopify::poll::poll_shop(&state, &shop).await {
                Ok((w, u)) => {
                    r.ok = 1;
                    r.written = w;
                    r.unchanged = u;
                }
                Err(e) => {
                    r.failed = 1;
                    r.failures.push((shop.to_string(), e.to_string()));
                }
            }
            r
        }
        None => crate::shopify::poll::poll_all_shops(&state).await?,
    };
    println!(
        "poll: shops ok {} failed {}; objects written {} unchanged {}",
        report.ok, report.failed, report.written, report.unchanged
    );
    for (id, reason) in &report.failures {
        println!("  failed {id}: {reason}");
    }
    if report.failed > 0 {
        anyhow::bail!(
            "{} of {} shops failed",
            report.failed,
            report.ok + report.failed
        );
    }
    Ok(())
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
