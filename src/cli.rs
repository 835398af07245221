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
    /// Re-fetch connected shops and pages now and upload what changed (all by default).
    Poll {
        /// Poll only this shop (`name` or `name.myshopify.com`).
        #[arg(long)]
        shop: Option<String>,
        /// Poll only this Facebook page (its numeric id).
        #[arg(long)]
        page: Option<String>,
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
        Command::Poll { shop, page } => {
            crate::telemetry::init(settings.log_format);
            run_async(poll(settings, shop, page))
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

async fn poll(settings: Settings, shop: Option<String>, page: Option<String>) -> anyhow::Result<()> {
    use crate::objects::keys::{PageId, ShopDomain};
    if shop.is_some() && settings.shopify.is_none() {
        anyhow::bail!("Shopify is not configured: set SHOPIFY_API_KEY and SHOPIFY_API_SECRET");
    }
    if page.is_some() && settings.facebook.is_none() {
        anyhow::bail!("Facebook is not configured: set FACEBOOK_APP_ID, FACEBOOK_APP_SECRET and FACEBOOK_VERIFY_TOKEN");
    }
    // Validate before opening anything.
    let shop = shop.map(|s| ShopDomain::normalize(&s)).transpose()?;
    let page = page.map(|p| PageId::parse(&p)).transpose()?;
    let state = crate::state::AppState::build(settings)?;
    let mut failures = Vec::new();
    if shop.is_none() && page.is_none() {
        let run = crate::poll::poll_everything(&state).await?;
        println!("{}", run.summary());
        failures.extend(run.shops.failures);
        failures.extend(run.pages.failures);
    }
    if let Some(shop) = shop {
        match crate::shopify::poll::poll_shop(&state, &shop).await {
            Ok((w, u)) => println!("shop {shop}: ok; objects written {w} unchanged {u}"),
            Err(e) => failures.push((shop.to_string(), e.to_string())),
        }
    }
    if let Some(page) = page {
        match crate::facebook::pages::poll_page(&state, &page).await {
            Ok((w, u)) => println!("page {page}: ok; objects written {w} unchanged {u}"),
            Err(e) => failures.push((page.to_string(), e.to_string())),
        }
    }
    for (id, reason) in &failures {
        eprintln!("  failed {id}: {reason}");
    }
    if !failures.is_empty() {
        anyhow::bail!("{} poll(s) failed", failures.len());
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
