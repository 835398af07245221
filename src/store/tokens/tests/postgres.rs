//! Several instances on one PostgreSQL database: each test opens two stores, each with a pool
//! of its own, on one test database (run only when `TEST_DATABASE_URL` is set).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use crate::config::DatabaseSettings;
use crate::ids::MerchantId;

/// A second pool on the database `first` uses: another instance of the service.
async fn second_instance(first: &PgDb) -> PgDb {
    let base = std::env::var("TEST_DATABASE_URL").expect("set when a test database exists");
    let options = first.pool().connect_options();
    let name = options.get_database().expect("a test database has a name");
    let mut url = url::Url::parse(&base).unwrap();
    url.set_path(name);
    PgDb::connect(&DatabaseSettings {
        url: SecretString::from(url.to_string()),
        max_connections: 4,
    })
    .await
    .unwrap()
}

/// Two stores on one database, or `None` without a test server.
async fn two_instances() -> Option<(TokenStore, TokenStore)> {
    let first = test_db().await?;
    let second = second_instance(&first).await;
    Some((
        TokenStore::on_postgres(first, key()),
        TokenStore::on_postgres(second, key()),
    ))
}

/// Runs `f` under the shop's refresh lock, recording how many callers are inside at once.
async fn refresh(
    s: &TokenStore,
    shop: &ShopDomain,
    inside: &AtomicUsize,
    most: &AtomicUsize,
) -> Instant {
    s.with_shop_refresh_lock(shop, || async {
        let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
        most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        inside.fetch_sub(1, Ordering::SeqCst);
        Instant::now()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn two_instances_refresh_a_shop_one_after_the_other() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    let (inside, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
    let started = Instant::now();
    let (end_a, end_b) = tokio::join!(
        refresh(&a, &shop, &inside, &most),
        refresh(&b, &shop, &inside, &most)
    );
    assert_eq!(most.load(Ordering::SeqCst), 1, "never both inside at once");
    let last = end_a.max(end_b) - started;
    assert!(
        last >= Duration::from_millis(600),
        "one after the other: {last:?}"
    );
    // Another shop's refresh does not wait for this one.
    let other = ShopDomain::parse("other.myshopify.com").unwrap();
    let (inside, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
    tokio::join!(
        refresh(&a, &shop, &inside, &most),
        refresh(&b, &other, &inside, &most)
    );
    assert_eq!(
        most.load(Ordering::SeqCst),
        2,
        "different shops run side by side"
    );
}

#[tokio::test]
async fn the_refresh_lock_is_released_after_an_error_and_when_the_caller_gives_up() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    let failed = a
        .with_shop_refresh_lock(&shop, || async { Err::<(), _>("token refused") })
        .await
        .unwrap();
    assert_eq!(failed, Err("token refused"));
    let quick = |s: &TokenStore| {
        let (s, shop) = (s.clone(), shop.clone());
        async move {
            tokio::time::timeout(
                Duration::from_secs(5),
                s.with_shop_refresh_lock(&shop, || async { 1 }),
            )
            .await
            .expect("the lock is free")
            .unwrap()
        }
    };
    assert_eq!(quick(&b).await, 1, "free after an error");
    // A caller dropped while it holds the lock (a cancelled request) frees it too.
    let entered = Arc::new(tokio::sync::Notify::new());
    let holder = {
        let (a, shop, entered) = (a.clone(), shop.clone(), entered.clone());
        tokio::spawn(async move {
            a.with_shop_refresh_lock(&shop, || async {
                entered.notify_one();
                std::future::pending::<()>().await
            })
            .await
        })
    };
    entered.notified().await;
    let waiting = tokio::spawn(quick(&b));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished(), "held while the holder runs");
    holder.abort();
    assert_eq!(waiting.await.unwrap(), 1, "free once the holder is gone");
    // The pool that held it still works (its connection was closed, not reused locked).
    assert_eq!(quick(&a).await, 1);
}

#[tokio::test]
async fn two_instances_installing_one_shop_agree_on_its_merchant() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    for round in 0..5 {
        let shop = ShopDomain::parse(&format!("shop{round}.myshopify.com")).unwrap();
        let (ma, mb) = tokio::join!(
            a.save_shop_grant(&shop, grant("ta"), None),
            b.save_shop_grant(&shop, grant("tb"), None)
        );
        let (ma, mb) = (ma.unwrap(), mb.unwrap());
        assert_eq!(ma, mb, "round {round}");
        assert_eq!(a.shop(&shop).await.unwrap().unwrap().merchant, ma);
    }
    let Backend::Postgres(pg) = a.backend() else {
        unreachable!()
    };
    let merchants: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM merchants")
        .fetch_one(pg.pool())
        .await
        .unwrap();
    assert_eq!(merchants, 5, "no orphan merchant");
}

#[tokio::test]
async fn two_instances_saving_one_new_page_never_take_it_silently() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    for round in 0..5 {
        let page = PageId::parse(&format!("{}", 100 + round)).unwrap();
        let (ma, mb) = (MerchantId::random(), MerchantId::random());
        let (ta, tb) = (secret("pa"), secret("pb"));
        // Two different Facebook users: whoever comes second is refused.
        let (ra, rb) = tokio::join!(
            a.save_page(&page, ma, Some("1".into()), None, &ta),
            b.save_page(&page, mb, Some("2".into()), None, &tb)
        );
        let mut outcomes = [ra.unwrap(), rb.unwrap()];
        outcomes.sort_by_key(|o| matches!(o, SavedPage::OwnedElsewhere));
        let SavedPage::Saved(owner) = outcomes[0] else {
            panic!("one saves: {outcomes:?}");
        };
        assert_eq!(outcomes[1], SavedPage::OwnedElsewhere, "round {round}");
        assert_eq!(a.page(&page).await.unwrap().unwrap().merchant, owner);
    }
}

#[tokio::test]
async fn two_instances_recording_one_deletion_request_record_it_once() {
    let Some((a, b)) = two_instances().await else {
        return;
    };
    for issued_at in 0..5 {
        let (ra, rb) = tokio::join!(
            a.record_deletion_request("code-a", "55", issued_at),
            b.record_deletion_request("code-b", "55", issued_at)
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        let codes = match (&ra, &rb) {
            (DeletionRecorded::New, DeletionRecorded::Replay(c)) => ("code-a", c),
            (DeletionRecorded::Replay(c), DeletionRecorded::New) => ("code-b", c),
            other => panic!("one records, one replays: {other:?}"),
        };
        assert_eq!(codes.0, codes.1.as_str());
        // The confirmation codes are primary keys: clear them for the next round.
        sqlx::query("DELETE FROM data_deletions")
            .execute(match a.backend() {
                Backend::Postgres(pg) => pg.pool(),
                Backend::Sqlite(_) => unreachable!(),
            })
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn ping_reaches_the_database() {
    let Some((a, _)) = two_instances().await else {
        return;
    };
    a.ping().await.unwrap();
}
