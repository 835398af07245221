//! Claims a second on the PostgreSQL queue as the events table grows: finished rows are kept
//! 7 days, so a busy page leaves hundreds of thousands of them behind. The claim must cost the
//! same with 0 or 200,000 of them (it once scanned the whole table on every claim).
//!
//! ```sh
//! createdb claims   # an empty database per run
//! ./target/release/examples/queue_claims --database-url postgres://…/claims --finished 200000
//! ```

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use salesbot_sync::config::DatabaseSettings;
use salesbot_sync::facebook::jobs::FacebookMessage;
use salesbot_sync::ids::{PageId, Psid};
use salesbot_sync::jobs::Job;
use salesbot_sync::store::events::{Claim, ClaimSpec, EventStore, Pool, Record};
use salesbot_sync::store::postgres::PgDb;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// An empty PostgreSQL database.
    #[arg(long)]
    database_url: String,
    /// Finished events already in the table.
    #[arg(long, default_value_t = 200_000)]
    finished: i64,
    /// Events queued, then claimed and recorded one a batch.
    #[arg(long, default_value_t = 5_000)]
    events: usize,
    /// Conversations they are spread over.
    #[arg(long, default_value_t = 200)]
    groups: usize,
    /// Concurrent workers.
    #[arg(long, default_value_t = 8)]
    workers: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let db = PgDb::connect(&DatabaseSettings {
        url: args.database_url.clone().into(),
        max_connections: (args.workers + 2) as u32,
    })
    .await?;
    // Finished rows as the queue leaves them (payload dropped, kept for their dedupe keys).
    sqlx::query(
        "INSERT INTO events (kind, pool, dedupe_key, group_key, payload, status, attempts,
                             run_at, received_at, finished_at)
         SELECT 'facebook_message', 'messages', 'finished:' || g, 'fbconv:1:' || (g % 5000),
                ''::bytea, 'done', 1, 0, 0, 1
         FROM generate_series(1, $1) g",
    )
    .bind(args.finished)
    .execute(db.pool())
    .await?;
    sqlx::query("ANALYZE events").execute(db.pool()).await?;
    let events = EventStore::on_postgres(db.clone()).await?;
    let page = PageId::parse("104700001000001")?;
    let jobs: Vec<_> = (0..args.events)
        .map(|i| {
            FacebookMessage {
                page: page.clone(),
                psid: Psid::parse(&format!("{}", 9_100_000_000u64 + (i % args.groups) as u64))
                    .expect("digits"),
                item: json!({"message": {"mid": format!("m{i}"), "text": "hi"}, "timestamp": i}),
                wait: 0,
            }
            .to_event()
        })
        .collect();
    for chunk in jobs.chunks(500) {
        events.enqueue_all(chunk.to_vec()).await?;
    }
    let spec = ClaimSpec {
        pool: Pool::Messages,
        max_batch: Arc::new(HashMap::new()),
    };
    let started = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for w in 0..args.workers {
        let (events, spec) = (events.clone(), spec.clone());
        set.spawn(async move {
            let worker = format!("bench-{w}");
            let (mut claims, mut spent) = (0u64, Duration::ZERO);
            loop {
                let t = Instant::now();
                let claim = events
                    .claim(&worker, &spec, Duration::from_secs(60))
                    .await?;
                spent += t.elapsed();
                match claim {
                    Claim::Batch(batch) => {
                        claims += 1;
                        let done = batch.iter().map(|e| e.id).collect();
                        events
                            .record(
                                &worker,
                                Record {
                                    done,
                                    ..Record::default()
                                },
                            )
                            .await?;
                    }
                    Claim::Idle { next_run_at: None } => break,
                    Claim::Idle { .. } => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
            anyhow::Ok((claims, spent))
        });
    }
    let (mut claims, mut spent) = (0u64, Duration::ZERO);
    while let Some(r) = set.join_next().await {
        let (c, s) = r??;
        claims += c;
        spent += s;
    }
    let elapsed = started.elapsed();
    let stats = events.stats().await?;
    println!(
        "{} finished rows, {} events over {} conversations, {} workers: {} claims in {:.2} s \
         = {:.0}/s, {:.2} ms a claim; {} pending left",
        args.finished,
        args.events,
        args.groups,
        args.workers,
        claims,
        elapsed.as_secs_f64(),
        claims as f64 / elapsed.as_secs_f64(),
        spent.as_secs_f64() * 1000.0 / claims.max(1) as f64,
        stats.pending
    );
    Ok(())
}
