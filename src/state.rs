//! `AppState`: configuration and every client a route or job needs, built once at start-up.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::crypto::TokenCipher;
use crate::oauth_state::StateSigner;
use crate::objects::ObjectStore;
use crate::platforms::facebook::client::GraphClient;
use crate::platforms::shopify::api::ShopifyApi;
use crate::platforms::shopify::client::ShopifyClient;
use crate::retry::UpstreamRetry;
use crate::store::catalog::CatalogStore;
use crate::store::ledger::DeletionLedger;
use crate::store::postgres::PgDb;
use crate::store::ticks::TickStore;
use crate::store::{Db, DbKind, EventStore, SessionStore, TokenStore};

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Settings>,
    pub tokens: TokenStore,
    pub sessions: SessionStore,
    pub events: EventStore,
    /// The Shopify catalogue cache the objects are built from.
    pub catalog: CatalogStore,
    pub objects: ObjectStore,
    pub states: StateSigner,
    /// Shared HTTP client for Shopify and Meta; redirects are never followed so a platform
    /// answer cannot send our credentials elsewhere.
    pub http: reqwest::Client,
    /// The configured Shopify app's Admin API client and token manager (`None`: off).
    pub shopify: Option<Arc<ShopifyApi>>,
    /// The configured Meta app's Graph client (`None`: off).
    pub graph: Option<GraphClient>,
    pub upstream_retry: UpstreamRetry,
    /// Who runs the scheduler's ticks when several instances share a database.
    pub ticks: TickStore,
    /// This process, in logs and tick claims (random per start).
    pub instance: Arc<str>,
    /// The shared PostgreSQL database, when the stores are there.
    pub postgres: Option<PgDb>,
    /// What was deleted, kept where a restore of `tokens.db` cannot roll it back.
    pub ledger: DeletionLedger,
}

/// Every store, on the backend the settings name.
pub struct Stores {
    pub tokens: TokenStore,
    pub sessions: SessionStore,
    pub events: EventStore,
    pub catalog: CatalogStore,
    pub ticks: TickStore,
    /// The PostgreSQL database they share (`None`: SQLite files).
    pub postgres: Option<PgDb>,
    /// Where a corrupt `catalog.db` was moved when a fresh one replaced it at this open (its
    /// shops need reading in full again).
    pub catalog_replaced: Option<PathBuf>,
}

impl Stores {
    /// Opens (and migrates) the SQLite files, or connects to `DATABASE_URL`.
    pub async fn open(config: &Settings) -> anyhow::Result<Stores> {
        let cipher = TokenCipher::new(config.token_key_bytes());
        if let Some(db) = &config.database {
            let pg = PgDb::connect(db).await?;
            return Ok(Stores {
                tokens: TokenStore::on_postgres(pg.clone(), cipher),
                sessions: SessionStore::on_postgres(pg.clone()),
                events: EventStore::on_postgres(pg.clone()).await?,
                catalog: CatalogStore::on_postgres(pg.clone()),
                ticks: TickStore::on_postgres(pg.clone()),
                postgres: Some(pg),
                catalog_replaced: None,
            });
        }
        let events = EventStore::open(&config.events_db_path)?;
        let (catalog, catalog_replaced) = CatalogStore::open_or_replace(&config.catalog_db_path)?;
        Ok(Stores {
            tokens: TokenStore::new(Db::open(&config.token_db_path, DbKind::Tokens)?, cipher),
            sessions: SessionStore::new(Db::open(&config.session_db_path, DbKind::Sessions)?),
            ticks: TickStore::sqlite(),
            events,
            catalog,
            postgres: None,
            catalog_replaced,
        })
    }
}

impl AppState {
    pub async fn build(config: Settings) -> anyhow::Result<AppState> {
        let stores = Stores::open(&config).await?;
        AppState::with_stores(config, stores)
    }

    pub fn with_stores(config: Settings, stores: Stores) -> anyhow::Result<AppState> {
        let Stores {
            tokens,
            sessions,
            events,
            catalog,
            ticks,
            postgres,
            catalog_replaced: _,
        } = stores;
        let objects = ObjectStore::from_settings(&config.storage)?;
        let states = StateSigner::new(config.state_token_secret.clone(), sessions.clone());
        let http = reqwest::Client::builder()
            .user_agent(concat!("salesbot-sync/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(60))
            .build()?;
        let ledger = DeletionLedger::beside(&config.token_db_path);
        let state = AppState {
            ledger,
            config: Arc::new(config),
            tokens,
            sessions,
            events,
            catalog,
            objects,
            states,
            http,
            shopify: None,
            graph: None,
            upstream_retry: UpstreamRetry::default(),
            ticks,
            instance: Arc::from(crate::crypto::random_token(6)),
            postgres,
        };
        Ok(state.with_upstream_retry(UpstreamRetry::default()))
    }

    /// The same state with the platform clients rebuilt to retry transient failures as
    /// `retry` says (tests shorten the delays).
    pub fn with_upstream_retry(mut self, retry: UpstreamRetry) -> AppState {
        self.shopify = self.config.shopify.as_ref().map(|s| {
            Arc::new(ShopifyApi::new(
                ShopifyClient::new(self.http.clone(), s.clone(), retry.clone()),
                self.tokens.clone(),
            ))
        });
        self.graph = self
            .config
            .facebook
            .as_ref()
            .map(|f| GraphClient::new(self.http.clone(), f.clone(), retry.clone()));
        self.upstream_retry = retry;
        self
    }
}
