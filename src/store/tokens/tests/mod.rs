//! The token store's behaviour, on every available backend: SQLite always, PostgreSQL when
//! `TEST_DATABASE_URL` is set. `postgres.rs` holds what only PostgreSQL has (several instances
//! on one database).

mod postgres;

use super::*;
use crate::ids::MerchantId;
use crate::ids::Psid;
use crate::store::postgres::test_db;
use crate::store::{now_secs, DbKind};

/// A store, with the directory its SQLite file lives in (kept until the test ends).
pub(super) struct On {
    pub(super) store: TokenStore,
    _dir: Option<tempfile::TempDir>,
}

impl On {
    pub(super) fn name(&self) -> &'static str {
        match self.store.backend() {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }
}

fn key() -> TokenCipher {
    TokenCipher::new(&[9u8; 32])
}

fn sqlite_store(dir: &std::path::Path) -> TokenStore {
    let db = Db::open(&dir.join("tokens.db"), DbKind::Tokens).unwrap();
    TokenStore::new(db, key())
}

/// The store on each available backend, each empty.
pub(super) async fn stores() -> Vec<On> {
    let dir = tempfile::tempdir().unwrap();
    let mut v = vec![On {
        store: sqlite_store(dir.path()),
        _dir: Some(dir),
    }];
    if let Some(pg) = test_db().await {
        v.push(On {
            store: TokenStore::on_postgres(pg, key()),
            _dir: None,
        });
    }
    v
}

/// Another store on the same rows, with another key.
fn same_rows(s: &TokenStore, cipher: TokenCipher) -> TokenStore {
    TokenStore {
        db: s.db.clone(),
        backend: s.backend.clone(),
        cipher,
    }
}

fn grant(tok: &str) -> ShopGrant {
    ShopGrant {
        access_token: SecretString::from(tok.to_string()),
        scopes: "read_products".into(),
        expires_at: None,
        refresh_token: None,
        refresh_token_expires_at: None,
    }
}

fn secret(t: &str) -> SecretString {
    SecretString::from(t.to_string())
}

/// Every stored token value, raw (as the database holds it).
async fn raw_tokens(s: &TokenStore) -> Vec<Vec<u8>> {
    const SQL: &str = "SELECT access_token FROM shops WHERE access_token IS NOT NULL
                       UNION ALL SELECT refresh_token FROM shops WHERE refresh_token IS NOT NULL
                       UNION ALL SELECT access_token FROM pages";
    let mut v: Vec<Vec<u8>> = match s.backend() {
        Backend::Sqlite(db) => db
            .call(|c| {
                let mut st = c.prepare(SQL)?;
                let v = st
                    .query_map([], |r| r.get(0))?
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(v)
            })
            .await
            .unwrap(),
        Backend::Postgres(pg) => sqlx::query_scalar(SQL).fetch_all(pg.pool()).await.unwrap(),
    };
    v.sort();
    v
}

/// Runs one statement directly on the store's database (a state the store would not write).
async fn exec(s: &TokenStore, sql: &'static str) {
    match s.backend() {
        Backend::Sqlite(db) => db
            .call(move |c| {
                c.execute(sql, [])?;
                Ok(())
            })
            .await
            .unwrap(),
        Backend::Postgres(pg) => {
            sqlx::query(sql).execute(pg.pool()).await.unwrap();
        }
    }
}

/// One stored token value, raw.
async fn raw_token(s: &TokenStore, sql: &'static str) -> Vec<u8> {
    match s.backend() {
        Backend::Sqlite(db) => db
            .call(move |c| Ok(c.query_row(sql, [], |r| r.get(0))?))
            .await
            .unwrap(),
        Backend::Postgres(pg) => sqlx::query_scalar(sql).fetch_one(pg.pool()).await.unwrap(),
    }
}

#[tokio::test]
async fn tokens_are_sealed_under_their_rows_associated_data() {
    for on in stores().await {
        let s = &on.store;
        let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
        let mut g = grant("t1");
        g.refresh_token = Some(secret("r1"));
        let m = s.save_shop_grant(&shop, g, None).await.unwrap();
        s.save_page(&PageId::parse("77").unwrap(), m, None, None, &secret("p1"))
            .await
            .unwrap();
        // The associated data is part of every stored value: these exact bytes, or tokens
        // stored by earlier versions no longer decrypt.
        for (sql, aad, plain) in [
            (
                "SELECT access_token FROM shops",
                &b"shop:acme.myshopify.com"[..],
                "t1",
            ),
            (
                "SELECT refresh_token FROM shops",
                b"shop-refresh:acme.myshopify.com",
                "r1",
            ),
            ("SELECT access_token FROM pages", b"page:77", "p1"),
        ] {
            let blob = raw_token(s, sql).await;
            let opened = key().decrypt(&blob, aad).unwrap();
            assert_eq!(opened.expose_secret(), plain, "{sql} on {}", on.name());
        }
    }
}

/// Every stored token, re-encrypted with `new` (what `rotate_key` hands the backend).
fn swaps_to(read: Vec<EncryptedToken>, new: &TokenCipher) -> Vec<TokenSwap> {
    read.into_iter()
        .map(|t| {
            let aad = t.column.aad(&t.id).bytes();
            let plain = key().decrypt(&t.ciphertext, &aad).unwrap();
            TokenSwap {
                column: t.column,
                id: t.id,
                new: new.encrypt(plain.expose_secret(), &aad),
                old: t.ciphertext,
            }
        })
        .collect()
}

#[tokio::test]
async fn a_rotation_that_races_a_token_write_changes_nothing() {
    for on in stores().await {
        let s = &on.store;
        let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
        let mut g = grant("t1");
        g.refresh_token = Some(secret("r1"));
        let m = s.save_shop_grant(&shop, g, None).await.unwrap();
        let page = PageId::parse("7").unwrap();
        s.save_page(&page, m, None, None, &secret("p1"))
            .await
            .unwrap();
        let new = TokenCipher::new(&[2u8; 32]);
        // A token stored after the read would stay under the old key: refused.
        let read = s.db.encrypted_tokens().await.unwrap();
        s.save_page(&PageId::parse("8").unwrap(), m, None, None, &secret("p2"))
            .await
            .unwrap();
        let before = raw_tokens(s).await;
        assert!(!s.db.replace_tokens(swaps_to(read, &new)).await.unwrap());
        assert_eq!(raw_tokens(s).await, before, "{}", on.name());
        // A token replaced after the read (the last one swapped): the shop's swaps made
        // before it are rolled back.
        let read = s.db.encrypted_tokens().await.unwrap();
        s.save_page(&page, m, None, None, &secret("p3"))
            .await
            .unwrap();
        let before = raw_tokens(s).await;
        assert!(!s.db.replace_tokens(swaps_to(read, &new)).await.unwrap());
        assert_eq!(raw_tokens(s).await, before, "{}", on.name());
        // Nothing written in between: every token moves to the new key.
        let read = s.db.encrypted_tokens().await.unwrap();
        assert_eq!(read.len(), 4);
        assert!(s.db.replace_tokens(swaps_to(read, &new)).await.unwrap());
        let rotated = same_rows(s, new);
        let rec = rotated.shop(&shop).await.unwrap().unwrap();
        assert_eq!(rec.refresh_token.unwrap().expose_secret(), "r1");
        let p = rotated.page(&page).await.unwrap().unwrap();
        assert_eq!(p.access_token.expose_secret(), "p3");
    }
}

#[tokio::test]
async fn a_page_is_not_marked_for_reauth_once_its_compared_token_was_replaced() {
    for on in stores().await {
        let s = &on.store;
        let page = PageId::parse("7").unwrap();
        let m = MerchantId::random();
        s.save_page(&page, m, None, None, &secret("same"))
            .await
            .unwrap();
        let compared = s.db.writable_page_token("7".into()).await.unwrap().unwrap();
        // A reconnect stores the same token again (a new ciphertext) after the comparison.
        s.save_page(&page, m, None, None, &secret("same"))
            .await
            .unwrap();
        assert!(!s
            .db
            .mark_page_reauth("7".into(), compared, "refused".into(), now_secs())
            .await
            .unwrap());
        let rec = s.page(&page).await.unwrap().unwrap();
        assert_eq!(rec.status, AccountStatus::Active, "{}", on.name());
        // Compared against what is stored now, it is marked.
        assert!(s
            .mark_page_reauth(&page, &secret("same"), "refused".into())
            .await
            .unwrap());
    }
}

#[tokio::test]
async fn a_stored_merchant_that_is_not_a_uuid_is_the_same_error_on_both_backends() {
    for on in stores().await {
        let s = &on.store;
        exec(
            s,
            "INSERT INTO merchants (uuid, created_at) VALUES ('not-a-uuid', 1)",
        )
        .await;
        exec(
            s,
            "INSERT INTO shops (domain, merchant_uuid, scopes, status, installed_at, updated_at)
             VALUES ('bad.myshopify.com', 'not-a-uuid', '', 'uninstalled', 1, 1)",
        )
        .await;
        let shop = ShopDomain::parse("bad.myshopify.com").unwrap();
        assert!(
            matches!(s.shop(&shop).await, Err(StoreError::Corrupt(_))),
            "{}",
            on.name()
        );
        assert!(matches!(
            s.shop_summaries().await,
            Err(StoreError::Corrupt(_))
        ));
    }
}

#[tokio::test]
async fn tokens_are_not_stored_in_plaintext() {
    for on in stores().await {
        let s = &on.store;
        let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
        let mut g = grant("shpat_PLAINTEXT_SHOP_TOKEN_123");
        g.refresh_token = Some(secret("shprt_PLAINTEXT_REFRESH_TOKEN"));
        let m = s.save_shop_grant(&shop, g, None).await.unwrap();
        s.save_page(
            &PageId::parse("1234").unwrap(),
            m,
            Some("55".into()),
            Some("Page".into()),
            &secret("EAAG_PLAINTEXT_PAGE_TOKEN"),
        )
        .await
        .unwrap();
        let values = raw_tokens(s).await;
        assert_eq!(values.len(), 3, "{}", on.name());
        let mut raw: Vec<u8> = values.concat();
        if let Backend::Sqlite(db) = s.backend() {
            // Checkpoint so the WAL contents land in the main file too; then read both raw.
            db.call(|c| {
                c.pragma_update(None, "wal_checkpoint", "FULL")?;
                Ok(())
            })
            .await
            .unwrap();
            let dir = db.path().parent().unwrap();
            raw.extend(std::fs::read(db.path()).unwrap());
            raw.extend(std::fs::read(dir.join("tokens.db-wal")).unwrap_or_default());
        }
        for needle in [
            "PLAINTEXT_SHOP_TOKEN",
            "PLAINTEXT_REFRESH_TOKEN",
            "PLAINTEXT_PAGE_TOKEN",
        ] {
            assert!(
                !raw.windows(needle.len()).any(|w| w == needle.as_bytes()),
                "{needle} found in the raw {} database",
                on.name()
            );
        }
        // And it still decrypts.
        let rec = s.shop(&shop).await.unwrap().unwrap();
        assert_eq!(
            rec.access_token.unwrap().expose_secret(),
            "shpat_PLAINTEXT_SHOP_TOKEN_123"
        );
        assert_eq!(
            rec.refresh_token.unwrap().expose_secret(),
            "shprt_PLAINTEXT_REFRESH_TOKEN"
        );
    }
}

/// Both backends hold the same ciphertext under the same associated data: a value written on
/// one reads on the other, in the same row and in no other.
#[tokio::test]
async fn a_ciphertext_written_on_postgres_reads_on_sqlite_in_the_same_row_only() {
    let Some(pg) = test_db().await else { return };
    let on_pg = TokenStore::on_postgres(pg.clone(), key());
    let dir = tempfile::tempdir().unwrap();
    let on_sqlite = sqlite_store(dir.path());
    let (a, b) = (
        ShopDomain::parse("a.myshopify.com").unwrap(),
        ShopDomain::parse("b.myshopify.com").unwrap(),
    );
    on_pg
        .save_shop_grant(&a, grant("written-on-postgres"), None)
        .await
        .unwrap();
    let blob: Vec<u8> = sqlx::query_scalar("SELECT access_token FROM shops WHERE domain = $1")
        .bind(a.as_str())
        .fetch_one(pg.pool())
        .await
        .unwrap();
    for d in [&a, &b] {
        on_sqlite
            .save_shop_grant(d, grant("sqlite"), None)
            .await
            .unwrap();
        let (d, blob) = (d.as_str().to_string(), blob.clone());
        on_sqlite
            .backend()
            .sqlite()
            .unwrap()
            .call(move |c| {
                c.execute(
                    "UPDATE shops SET access_token = ?1 WHERE domain = ?2",
                    rusqlite::params![blob, d],
                )?;
                Ok(())
            })
            .await
            .unwrap();
    }
    let rec = on_sqlite.shop(&a).await.unwrap().unwrap();
    assert_eq!(
        rec.access_token.unwrap().expose_secret(),
        "written-on-postgres"
    );
    assert!(
        matches!(on_sqlite.shop(&b).await, Err(StoreError::Cipher(_))),
        "another row's ciphertext does not decrypt"
    );
}

#[tokio::test]
async fn reinstall_keeps_the_merchant_uuid_and_uninstall_revokes() {
    for on in stores().await {
        let s = &on.store;
        let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
        let m1 = s.save_shop_grant(&shop, grant("t1"), None).await.unwrap();
        assert_eq!(m1.as_uuid().get_version_num(), 4);
        assert!(s.merchant_exists(m1).await.unwrap());
        assert!(s.merchant_has_installed_shop(m1).await.unwrap());
        s.set_shop_status(
            &shop,
            AccountStatus::Uninstalled,
            Some("app/uninstalled".into()),
        )
        .await
        .unwrap();
        let rec = s.shop(&shop).await.unwrap().unwrap();
        assert!(rec.access_token.is_none());
        assert_eq!(rec.status, AccountStatus::Uninstalled);
        assert_eq!(rec.status_reason.as_deref(), Some("app/uninstalled"));
        assert!(s.active_shops().await.unwrap().is_empty());
        assert!(!s.merchant_has_installed_shop(m1).await.unwrap());
        let m2 = s.save_shop_grant(&shop, grant("t2"), None).await.unwrap();
        assert_eq!(m1, m2, "{}", on.name());
        assert_eq!(s.active_shops().await.unwrap(), vec![shop.clone()]);
        // A new shop joins the merchant it is given.
        let other = ShopDomain::parse("other.myshopify.com").unwrap();
        assert_eq!(
            s.save_shop_grant(&other, grant("t3"), Some(m1))
                .await
                .unwrap(),
            m1
        );
        let ids: Vec<String> = s
            .merchant_shops(m1)
            .await
            .unwrap()
            .into_iter()
            .map(|a| a.id)
            .collect();
        assert_eq!(ids, ["acme.myshopify.com", "other.myshopify.com"]);
        assert!(s.delete_shop(&other).await.unwrap());
        assert!(!s.delete_shop(&other).await.unwrap());
        assert!(s.shop(&other).await.unwrap().is_none());
    }
}

#[tokio::test]
async fn a_refresh_replaces_tokens_only_of_the_install_it_read() {
    for on in stores().await {
        let s = &on.store;
        let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
        s.save_shop_grant(&shop, grant("t1"), None).await.unwrap();
        let installed = s.shop_installed_at(&shop).await.unwrap().unwrap();
        let mut fresh = grant("t2");
        fresh.expires_at = Some(100);
        fresh.refresh_token = Some(secret("r2"));
        fresh.refresh_token_expires_at = Some(200);
        assert!(s.update_shop_tokens(&shop, fresh, installed).await.unwrap());
        let rec = s.shop(&shop).await.unwrap().unwrap();
        assert_eq!(rec.access_token.unwrap().expose_secret(), "t2");
        assert_eq!(rec.refresh_token.unwrap().expose_secret(), "r2");
        assert_eq!(
            (rec.expires_at, rec.refresh_token_expires_at),
            (Some(100), Some(200))
        );
        assert_eq!(rec.installed_at, installed, "install state kept");
        // Another install's refresh does not land.
        assert!(!s
            .update_shop_tokens(&shop, grant("t3"), installed - 1)
            .await
            .unwrap());
        assert!(!s
            .mark_shop_reauth(&shop, installed - 1, "old".into())
            .await
            .unwrap());
        assert!(s
            .mark_shop_reauth(&shop, installed, "refused".into())
            .await
            .unwrap());
        let rec = s.shop(&shop).await.unwrap().unwrap();
        assert_eq!(rec.status, AccountStatus::NeedsReauth, "{}", on.name());
        assert!(!s
            .update_shop_tokens(&shop, grant("t4"), installed)
            .await
            .unwrap());
        // Shop ids.
        assert_eq!(s.shop_id(&shop).await.unwrap(), None);
        s.set_shop_id(&shop, 42).await.unwrap();
        assert_eq!(s.shop_id(&shop).await.unwrap(), Some(42));
        let unknown = ShopDomain::parse("nobody.myshopify.com").unwrap();
        s.set_shop_id(&unknown, 1).await.unwrap();
        assert_eq!(s.shop_id(&unknown).await.unwrap(), None);
        assert_eq!(s.shop_installed_at(&unknown).await.unwrap(), None);
        // A shop cannot be `deleting`: both backends refuse it.
        assert!(s
            .set_shop_status(&shop, AccountStatus::Deleting, None)
            .await
            .is_err());
    }
}

#[tokio::test]
async fn rotate_key_re_encrypts_everything() {
    for on in stores().await {
        let s = &on.store;
        let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
        let mut g = grant("t1");
        g.refresh_token = Some(secret("r1"));
        let m = s.save_shop_grant(&shop, g, None).await.unwrap();
        let page = PageId::parse("7").unwrap();
        s.save_page(&page, m, None, None, &secret("p1"))
            .await
            .unwrap();
        s.save_facebook_user(m, None).await.unwrap();
        let new = TokenCipher::new(&[2u8; 32]);
        // The shop's two tokens and the page token: no Facebook user token is stored.
        assert_eq!(s.rotate_key(new.clone()).await.unwrap(), 3, "{}", on.name());
        assert!(s.shop(&shop).await.is_err(), "the old key no longer reads");
        let rotated = same_rows(s, new);
        let rec = rotated.shop(&shop).await.unwrap().unwrap();
        assert_eq!(rec.access_token.unwrap().expose_secret(), "t1");
        assert_eq!(rec.refresh_token.unwrap().expose_secret(), "r1");
        let read_page = || async {
            rotated
                .page(&page)
                .await
                .unwrap()
                .unwrap()
                .access_token
                .expose_secret()
                .to_string()
        };
        assert_eq!(read_page().await, "p1");
        // Rotating with the wrong current key fails and changes nothing.
        let before = raw_tokens(s).await;
        assert!(matches!(
            s.rotate_key(TokenCipher::new(&[3u8; 32])).await,
            Err(StoreError::Cipher(_))
        ));
        assert_eq!(raw_tokens(s).await, before, "{}", on.name());
        // Half-way failure: one value under another key rolls back the ones before it.
        let shop2 = ShopDomain::parse("zzz.myshopify.com").unwrap();
        rotated
            .save_shop_grant(&shop2, grant("t2"), None)
            .await
            .unwrap();
        let stray = same_rows(s, TokenCipher::new(&[4u8; 32]));
        stray
            .save_page(&PageId::parse("8").unwrap(), m, None, None, &secret("p2"))
            .await
            .unwrap();
        let before = raw_tokens(s).await;
        assert!(rotated.rotate_key(key()).await.is_err());
        assert_eq!(raw_tokens(s).await, before, "{}", on.name());
        assert_eq!(read_page().await, "p1");
    }
}

#[tokio::test]
async fn wrong_key_cannot_read_tokens() {
    for on in stores().await {
        let s = &on.store;
        let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
        let m = s.save_shop_grant(&shop, grant("t1"), None).await.unwrap();
        let page = PageId::parse("7").unwrap();
        s.save_page(&page, m, None, None, &secret("p1"))
            .await
            .unwrap();
        let other = same_rows(s, TokenCipher::new(&[1u8; 32]));
        assert!(matches!(
            other.shop(&shop).await,
            Err(StoreError::Cipher(_))
        ));
        assert!(matches!(
            other.page(&page).await,
            Err(StoreError::Cipher(_))
        ));
    }
}

#[tokio::test]
async fn summaries_sort_the_same_on_both_backends() {
    for on in stores().await {
        let s = &on.store;
        let m = MerchantId::random();
        // Byte order, NULL first: what SQLite does and PostgreSQL is told to do.
        for (id, name) in [
            ("30", Some("b")),
            ("4", Some("B")),
            ("2", None),
            ("10", Some("a")),
        ] {
            s.save_page(
                &PageId::parse(id).unwrap(),
                m,
                None,
                name.map(str::to_string),
                &secret("p"),
            )
            .await
            .unwrap();
        }
        for d in ["b-shop.myshopify.com", "a-shop.myshopify.com"] {
            s.save_shop_grant(&ShopDomain::parse(d).unwrap(), grant("t"), Some(m))
                .await
                .unwrap();
        }
        let pages: Vec<(String, Option<String>)> = s
            .merchant_pages(m)
            .await
            .unwrap()
            .into_iter()
            .map(|(a, n)| (a.id, n))
            .collect();
        let expected: Vec<(String, Option<String>)> = [
            ("2", None),
            ("4", Some("B")),
            ("10", Some("a")),
            ("30", Some("b")),
        ]
        .into_iter()
        .map(|(i, n)| (i.to_string(), n.map(str::to_string)))
        .collect();
        assert_eq!(pages, expected, "{}", on.name());
        let ids = |v: Vec<AccountSummary>| v.into_iter().map(|a| a.id).collect::<Vec<_>>();
        assert_eq!(
            ids(s.page_summaries().await.unwrap()),
            ["10", "2", "30", "4"]
        );
        assert_eq!(
            ids(s.shop_summaries().await.unwrap()),
            ["a-shop.myshopify.com", "b-shop.myshopify.com"]
        );
        let active: Vec<String> = s
            .active_pages()
            .await
            .unwrap()
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(active, ["10", "2", "30", "4"]);
        assert!(s
            .page_summaries()
            .await
            .unwrap()
            .iter()
            .all(|a| a.merchant == m && a.status == AccountStatus::Active && a.reason.is_none()));
    }
}

#[tokio::test]
async fn watermarks_are_kept_per_conversation_and_refused_for_deleting_pages() {
    for on in stores().await {
        let s = &on.store;
        let page = PageId::parse("7").unwrap();
        let psid = Psid::parse("900").unwrap();
        let w = Watermark {
            conversation_id: "t_1".into(),
            updated_time: 1_000,
            newest_ts: Some(990),
            newest_mid: Some("m_1".into()),
            object_sha256: None,
        };
        assert!(
            !s.save_watermark(&page, &psid, w.clone()).await.unwrap(),
            "no page yet"
        );
        assert_eq!(s.page_last_polled(&page).await.unwrap(), None);
        s.save_page(
            &page,
            MerchantId::random(),
            Some("55".into()),
            None,
            &secret("p"),
        )
        .await
        .unwrap();
        assert!(s.save_watermark(&page, &psid, w.clone()).await.unwrap());
        let w2 = Watermark {
            updated_time: 2_000,
            object_sha256: Some("ab".into()),
            ..w.clone()
        };
        assert!(s.save_watermark(&page, &psid, w2.clone()).await.unwrap());
        assert_eq!(s.watermark(&page, &psid).await.unwrap(), Some(w2));
        let times = s.watermark_times(&page).await.unwrap();
        assert_eq!(times.len(), 1);
        assert_eq!(times["900"], 2_000);
        let polled = s.page_last_polled(&page).await.unwrap().unwrap();
        assert_eq!(polled % 1000, 0, "seconds shown as milliseconds");
        assert!((polled / 1000 - now_secs()).abs() < 5, "{}", on.name());
        let marked = s.mark_pages_deleting("55", "gone").await.unwrap();
        assert_eq!(marked.len(), 1);
        assert!(!s.save_watermark(&page, &psid, w).await.unwrap());
        // Deleting the page takes its watermarks with it.
        assert!(s.delete_page(&page).await.unwrap());
        assert!(s.watermark_times(&page).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn a_page_is_marked_for_reauth_only_while_the_refused_token_is_stored() {
    for on in stores().await {
        let s = &on.store;
        let page = PageId::parse("7").unwrap();
        let m = MerchantId::random();
        s.save_page(
            &page,
            m,
            Some("55".into()),
            Some("P".into()),
            &secret("old"),
        )
        .await
        .unwrap();
        s.save_page(
            &page,
            m,
            Some("55".into()),
            Some("P".into()),
            &secret("new"),
        )
        .await
        .unwrap();
        assert!(!s
            .mark_page_reauth(&page, &secret("old"), "refused".into())
            .await
            .unwrap());
        assert_eq!(
            s.page(&page).await.unwrap().unwrap().status,
            AccountStatus::Active
        );
        assert!(s
            .mark_page_reauth(&page, &secret("new"), "refused".into())
            .await
            .unwrap());
        let rec = s.page(&page).await.unwrap().unwrap();
        assert_eq!(rec.status, AccountStatus::NeedsReauth, "{}", on.name());
        assert_eq!(rec.status_reason.as_deref(), Some("refused"));
        assert_eq!(rec.name.as_deref(), Some("P"));
        s.set_page_status(&page, AccountStatus::Active, None)
            .await
            .unwrap();
        // Once deleting, no status undoes it and no grant brings it back.
        s.mark_pages_deleting("55", "deletion").await.unwrap();
        s.set_page_status(&page, AccountStatus::Active, None)
            .await
            .unwrap();
        assert_eq!(
            s.page(&page).await.unwrap().unwrap().status,
            AccountStatus::Deleting
        );
        assert!(!s
            .mark_page_reauth(&page, &secret("new"), "refused".into())
            .await
            .unwrap());
        assert_eq!(
            s.save_page(&page, m, Some("55".into()), None, &secret("again"))
                .await
                .unwrap(),
            SavedPage::BeingDeleted
        );
        assert!(s.active_pages().await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn facebook_users_and_what_they_granted() {
    for on in stores().await {
        let s = &on.store;
        let (a, b) = (MerchantId::random(), MerchantId::random());
        assert!(s.facebook_user(a).await.unwrap().is_none());
        s.save_facebook_user(a, Some("55".into())).await.unwrap();
        s.save_facebook_user(b, Some("55".into())).await.unwrap();
        assert!(s.merchant_exists(a).await.unwrap(), "{}", on.name());
        s.set_facebook_user_status(a, AccountStatus::NeedsReauth, Some("expired".into()))
            .await
            .unwrap();
        let rec = s.facebook_user(a).await.unwrap().unwrap();
        assert_eq!(
            (rec.fb_user_id.as_deref(), rec.status),
            (Some("55"), AccountStatus::NeedsReauth)
        );
        let mut both = vec![a, b];
        both.sort_by_key(|u| u.to_string());
        assert_eq!(s.merchants_of_facebook_user("55").await.unwrap(), both);
        assert!(s.merchants_of_facebook_user("66").await.unwrap().is_empty());
        assert!(!s.merchant_has_connections(a).await.unwrap());
        let page = PageId::parse("7").unwrap();
        s.save_page(&page, a, Some("55".into()), None, &secret("p"))
            .await
            .unwrap();
        assert!(s.merchant_has_connections(a).await.unwrap());
        assert_eq!(
            s.pages_granted_by("55").await.unwrap(),
            vec![(a, page.clone())]
        );
        s.delete_facebook_user(a).await.unwrap();
        assert!(s.facebook_user(a).await.unwrap().is_none());
        assert_eq!(s.merchants_of_facebook_user("55").await.unwrap(), vec![b]);
    }
}

#[tokio::test]
async fn a_deletion_request_is_recorded_once_and_reports_its_progress() {
    for on in stores().await {
        let s = &on.store;
        assert_eq!(
            s.record_deletion_request("code1", "55", 1_000)
                .await
                .unwrap(),
            DeletionRecorded::New
        );
        // The same request again is answered with the original's code.
        assert_eq!(
            s.record_deletion_request("code2", "55", 1_000)
                .await
                .unwrap(),
            DeletionRecorded::Replay("code1".into()),
            "{}",
            on.name()
        );
        assert!(s.deletion_status("code2").await.unwrap().is_none());
        // Another request of the same user is another deletion.
        assert_eq!(
            s.record_deletion_request("code3", "55", 1_001)
                .await
                .unwrap(),
            DeletionRecorded::New
        );
        let st = s.deletion_status("code1").await.unwrap().unwrap();
        assert_eq!(st.status, "pending");
        assert!((st.requested_at - now_secs()).abs() < 5);
        assert_eq!(
            (st.completed_at, st.pages_deleted, st.objects_deleted),
            (None, None, None)
        );
        let pending = s.unfinished_deletions().await.unwrap();
        assert_eq!(
            pending,
            vec![("code1".into(), "55".into()), ("code3".into(), "55".into())]
        );
        s.deletion_done("code1", 2, 40, 3).await.unwrap();
        // Done once: a resumed job finishing again leaves the first record.
        s.deletion_done("code1", 0, 0, 0).await.unwrap();
        let st = s.deletion_status("code1").await.unwrap().unwrap();
        assert_eq!(st.status, "done", "{}", on.name());
        assert!(st.completed_at.is_some());
        assert_eq!((st.pages_deleted, st.objects_deleted), (Some(2), Some(40)));
        assert_eq!(
            s.unfinished_deletions().await.unwrap(),
            vec![("code3".into(), "55".into())]
        );
    }
}

#[tokio::test]
async fn on_sqlite_the_refresh_lock_just_runs_the_closure() {
    let dir = tempfile::tempdir().unwrap();
    let s = sqlite_store(dir.path());
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    let out = s
        .with_shop_refresh_lock(&shop, || async { Err::<(), _>("refused") })
        .await
        .unwrap();
    assert_eq!(out, Err("refused"));
    assert_eq!(
        s.with_shop_refresh_lock(&shop, || async { 7 })
            .await
            .unwrap(),
        7
    );
    s.ping().await.unwrap();
}
