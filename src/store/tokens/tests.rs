use super::*;
use crate::store::DbKind;

fn store(dir: &std::path::Path) -> TokenStore {
    let db = Db::open(&dir.join("tokens.db"), DbKind::Tokens).unwrap();
    TokenStore::new(db, TokenCipher::new(&[9u8; 32]))
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

#[tokio::test]
async fn tokens_are_not_in_the_database_file_in_plaintext() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    let m = s
        .save_shop_grant(&shop, grant("shpat_PLAINTEXT_SHOP_TOKEN_123"), None)
        .await
        .unwrap();
    s.save_page(
        &PageId::parse("1234").unwrap(),
        m,
        Some("55".into()),
        Some("Page".into()),
        &SecretString::from("EAAG_PLAINTEXT_PAGE_TOKEN".to_string()),
    )
    .await
    .unwrap();
    // Checkpoint so the WAL contents land in the main file too; then read both raw.
    s.db()
        .call(|c| {
            c.pragma_update(None, "wal_checkpoint", "FULL")?;
            Ok(())
        })
        .await
        .unwrap();
    let mut raw = std::fs::read(dir.path().join("tokens.db")).unwrap();
    raw.extend(std::fs::read(dir.path().join("tokens.db-wal")).unwrap_or_default());
    for needle in ["PLAINTEXT_SHOP_TOKEN", "PLAINTEXT_PAGE_TOKEN"] {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle.as_bytes()),
            "{needle} found in the raw database file"
        );
    }
    // And it still decrypts.
    let rec = s.shop(&shop).await.unwrap().unwrap();
    assert_eq!(
        rec.access_token.unwrap().expose_secret(),
        "shpat_PLAINTEXT_SHOP_TOKEN_123"
    );
}

#[tokio::test]
async fn reinstall_keeps_the_merchant_uuid_and_uninstall_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    let m1 = s.save_shop_grant(&shop, grant("t1"), None).await.unwrap();
    assert_eq!(m1.get_version_num(), 4);
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
    assert!(s.active_shops().await.unwrap().is_empty());
    let m2 = s.save_shop_grant(&shop, grant("t2"), None).await.unwrap();
    assert_eq!(m1, m2);
    assert_eq!(s.active_shops().await.unwrap(), vec![shop]);
}

#[tokio::test]
async fn rotate_key_re_encrypts_everything() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    let m = s.save_shop_grant(&shop, grant("t1"), None).await.unwrap();
    let page = PageId::parse("7").unwrap();
    s.save_page(&page, m, None, None, &SecretString::from("p1".to_string()))
        .await
        .unwrap();
    s.save_facebook_user(m, None).await.unwrap();
    let new = TokenCipher::new(&[2u8; 32]);
    // The shop and the page token: no Facebook user token is stored any more.
    assert_eq!(s.rotate_key(new.clone()).await.unwrap(), 2);
    assert!(s.shop(&shop).await.is_err(), "the old key no longer reads");
    let rotated = TokenStore::new(s.db().clone(), new);
    assert_eq!(
        rotated
            .shop(&shop)
            .await
            .unwrap()
            .unwrap()
            .access_token
            .unwrap()
            .expose_secret(),
        "t1"
    );
    assert_eq!(
        rotated
            .page(&page)
            .await
            .unwrap()
            .unwrap()
            .access_token
            .expose_secret(),
        "p1"
    );
    // Rotating with the wrong current key fails and changes nothing.
    assert!(s.rotate_key(TokenCipher::new(&[3u8; 32])).await.is_err());
    assert_eq!(
        rotated
            .page(&page)
            .await
            .unwrap()
            .unwrap()
            .access_token
            .expose_secret(),
        "p1"
    );
}

#[tokio::test]
async fn wrong_key_cannot_read_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    s.save_shop_grant(&shop, grant("t1"), None).await.unwrap();
    let other = TokenStore::new(s.db().clone(), TokenCipher::new(&[1u8; 32]));
    assert!(matches!(
        other.shop(&shop).await,
        Err(StoreError::Cipher(_))
    ));
}
