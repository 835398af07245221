//! The catalogue store on each backend: every test runs on SQLite, and on PostgreSQL too when
//! `TEST_DATABASE_URL` is set, with the same expectations (the backends must agree).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};

use super::*;

/// The store on each available backend (the SQLite one with the directory its file lives in).
async fn stores() -> Vec<(CatalogStore, Option<tempfile::TempDir>)> {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = CatalogStore::open(&dir.path().join("catalog.db")).unwrap();
    let mut out = vec![(sqlite, Some(dir))];
    if let Some(pg) = crate::store::postgres::test_db().await {
        out.push((CatalogStore::on_postgres(pg), None));
    }
    out
}

fn shop(name: &str) -> ShopDomain {
    ShopDomain::parse(&format!("{name}.myshopify.com")).unwrap()
}

fn row(id: i64, body: &str, handle: Option<&str>) -> EntityRow {
    EntityRow {
        id,
        body: body.as_bytes().to_vec(),
        handle: handle.map(str::to_string),
        updated_at: Some("2024-01-01T00:00:00Z".into()),
    }
}

/// Every body of `kind`, read by a whole scan.
async fn scan(c: &CatalogStore, s: &ShopDomain, kind: EntityKind) -> Vec<Vec<u8>> {
    c.bodies(s, kind)
        .map_ok(|b| b.to_vec())
        .try_collect()
        .await
        .unwrap()
}

fn name(c: &CatalogStore) -> &'static str {
    match c.backend() {
        Backend::Sqlite(_) => "sqlite",
        Backend::Postgres(_) => "postgres",
    }
}

#[tokio::test]
async fn shop_state_round_trips_and_the_watermark_only_moves_forward() {
    for (c, _dir) in stores().await {
        let s = shop("a");
        c.ping().await.unwrap();
        assert_eq!(c.state(&s).await.unwrap(), ShopState::default());
        assert_eq!(c.shop_body(&s).await.unwrap(), None);

        c.set_watermark(&s, "2024-05-01T00:00:00Z").await.unwrap();
        c.set_watermark(&s, "2024-04-01T00:00:00Z").await.unwrap();
        c.set_bulk(
            &s,
            Some(("gid://shopify/BulkOperation/1", BulkStage::Variants)),
        )
        .await
        .unwrap();
        c.set_built_at(&s, 1234).await.unwrap();
        c.set_shop_body(&s, b"{\"name\":\"A\"}".to_vec())
            .await
            .unwrap();
        assert_eq!(
            c.state(&s).await.unwrap(),
            ShopState {
                generation: 0,
                full_synced_at: None,
                watermark: Some("2024-05-01T00:00:00Z".into()),
                bulk: Some(("gid://shopify/BulkOperation/1".into(), BulkStage::Variants)),
                built_at: Some(1234),
            },
            "{}",
            name(&c)
        );
        assert_eq!(
            c.shop_body(&s).await.unwrap().as_deref(),
            Some(&b"{\"name\":\"A\"}"[..])
        );
        c.set_watermark(&s, "2024-06-01T00:00:00Z").await.unwrap();
        c.set_bulk(&s, None).await.unwrap();
        let st = c.state(&s).await.unwrap();
        assert_eq!(st.watermark.as_deref(), Some("2024-06-01T00:00:00Z"));
        assert_eq!(st.bulk, None);

        // Another shop is untouched.
        assert_eq!(c.state(&shop("b")).await.unwrap(), ShopState::default());
    }
}

#[tokio::test]
async fn put_counts_changed_rows_and_the_later_of_two_same_ids_wins() {
    for (c, _dir) in stores().await {
        let s = shop("a");
        let n = c
            .put(
                &s,
                EntityKind::Product,
                vec![row(2, "b", Some("h-b")), row(1, "a", Some("h-a"))],
                1,
            )
            .await
            .unwrap();
        assert_eq!(n, 2, "{}", name(&c));
        // Same body: unchanged; new body: changed; new id: changed.
        let n = c
            .put(
                &s,
                EntityKind::Product,
                vec![
                    row(1, "a", Some("h-a")),
                    row(2, "b2", None),
                    row(3, "c", None),
                ],
                2,
            )
            .await
            .unwrap();
        assert_eq!(n, 2, "{}", name(&c));
        // One batch naming id 4 twice: both count (new, then different), the later is kept;
        // naming id 1 twice with its stored body: neither counts.
        let n = c
            .put(
                &s,
                EntityKind::Product,
                vec![
                    row(4, "x", None),
                    row(1, "a", None),
                    row(4, "y", None),
                    row(1, "a", None),
                ],
                2,
            )
            .await
            .unwrap();
        assert_eq!(n, 2, "{}", name(&c));
        assert_eq!(
            c.get(&s, EntityKind::Product, 4).await.unwrap().as_deref(),
            Some(&b"y"[..])
        );
        assert_eq!(
            c.ids(&s, EntityKind::Product).await.unwrap(),
            vec![1, 2, 3, 4]
        );
        assert_eq!(c.count(&s, EntityKind::Product).await.unwrap(), 4);
        assert_eq!(c.count(&s, EntityKind::Collection).await.unwrap(), 0);
        assert_eq!(c.handle_of(&s, 2).await.unwrap(), None);
        assert_eq!(c.handle_of(&s, 9).await.unwrap(), None);
        assert_eq!(c.get(&s, EntityKind::Discount, 1).await.unwrap(), None);
        assert_eq!(c.put(&s, EntityKind::Product, vec![], 2).await.unwrap(), 0);
        assert_eq!(
            scan(&c, &s, EntityKind::Product).await,
            vec![b"a".to_vec(), b"b2".to_vec(), b"c".to_vec(), b"y".to_vec()]
        );
        assert!(scan(&c, &shop("b"), EntityKind::Product).await.is_empty());
    }
}

#[tokio::test]
async fn delete_and_retain_remove_rows_and_their_inventory_items() {
    for (c, _dir) in stores().await {
        let s = shop("a");
        let rows = (1..=5).map(|i| row(i, "p", None)).collect();
        c.put(&s, EntityKind::Product, rows, 1).await.unwrap();
        c.put(&s, EntityKind::Collection, vec![row(1, "c", None)], 1)
            .await
            .unwrap();
        c.set_inventory_items_of(
            &s,
            (1..=5).map(|p| (p, vec![(100 + p, 200 + p)])).collect(),
            1,
        )
        .await
        .unwrap();
        assert_eq!(
            c.delete(&s, EntityKind::Product, vec![1, 1, 9])
                .await
                .unwrap(),
            1,
            "{}",
            name(&c)
        );
        assert_eq!(c.product_of_item(&s, 101).await.unwrap(), None);
        assert_eq!(c.product_of_item(&s, 102).await.unwrap(), Some(2));
        let keep: HashSet<i64> = [2, 4].into();
        assert_eq!(c.retain(&s, EntityKind::Product, keep).await.unwrap(), 2);
        assert_eq!(c.ids(&s, EntityKind::Product).await.unwrap(), vec![2, 4]);
        assert_eq!(c.product_of_item(&s, 103).await.unwrap(), None);
        assert_eq!(c.product_of_item(&s, 104).await.unwrap(), Some(4));
        // Collections are another kind: untouched, and deleting them leaves items alone.
        assert_eq!(c.ids(&s, EntityKind::Collection).await.unwrap(), vec![1]);
        c.delete(&s, EntityKind::Collection, vec![2]).await.unwrap();
        assert_eq!(c.product_of_item(&s, 102).await.unwrap(), Some(2));
    }
}

#[tokio::test]
async fn collections_listing_finds_handles_as_json_strings() {
    for (c, _dir) in stores().await {
        let s = shop("a");
        c.put(
            &s,
            EntityKind::Collection,
            vec![
                row(3, r#"{"products":["shirt","hat"]}"#, None),
                row(1, r#"{"products":["shirt-blue"]}"#, None),
                row(2, r#"{"products":["sock \"x\""]}"#, None),
            ],
            1,
        )
        .await
        .unwrap();
        c.put(
            &shop("b"),
            EntityKind::Collection,
            vec![row(7, r#"["shirt"]"#, None)],
            1,
        )
        .await
        .unwrap();
        let find =
            |h: &[&str]| c.collections_listing(&s, h.iter().map(|h| h.to_string()).collect());
        assert_eq!(find(&["shirt"]).await.unwrap(), vec![3], "{}", name(&c));
        assert_eq!(find(&["shirt-blue", "hat"]).await.unwrap(), vec![1, 3]);
        assert_eq!(find(&["sock \"x\""]).await.unwrap(), vec![2]);
        assert_eq!(find(&["shoe"]).await.unwrap(), Vec::<i64>::new());
        assert_eq!(find(&[]).await.unwrap(), Vec::<i64>::new());
    }
}

#[tokio::test]
async fn the_inventory_index_replaces_product_after_product() {
    for (c, _dir) in stores().await {
        let s = shop("a");
        c.set_inventory_items(&s, 1, vec![(10, 100), (11, 101)], 3000)
            .await
            .unwrap();
        // Product 1 twice (its later list wins), item 10 moved to product 2 in between and
        // back to 1 later, item 12 listed twice by product 3 (the later variant wins).
        c.set_inventory_items_of(
            &s,
            vec![
                (1, vec![(13, 103)]),
                (2, vec![(10, 200)]),
                (3, vec![(12, 300), (12, 301)]),
                (1, vec![(14, 104), (10, 105)]),
            ],
            4000,
        )
        .await
        .unwrap();
        let owners: HashMap<i64, Option<i64>> = {
            let mut m = HashMap::new();
            for item in 10..=15 {
                m.insert(item, c.product_of_item(&s, item).await.unwrap());
            }
            m
        };
        let expect: HashMap<i64, Option<i64>> = [
            (10, Some(1)),
            (11, None),
            (12, Some(3)),
            (13, None),
            (14, Some(1)),
            (15, None),
        ]
        .into();
        assert_eq!(owners, expect, "{}", name(&c));

        // Fetch times of items and of entities.
        c.mark_items_fetched(&s, vec![10, 12, 99], 5000)
            .await
            .unwrap();
        let at = c.items_fetched_at(&s, vec![10, 12, 14, 99]).await.unwrap();
        assert_eq!(at[&10], 5000);
        assert_eq!(at[&12], 5000);
        // Set by the index write itself, as of when its levels were read with the product.
        assert_eq!(at[&14], 4000);
        assert!(!at.contains_key(&99));
        c.put(
            &s,
            EntityKind::Product,
            vec![row(1, "a", None), row(2, "b", None)],
            1,
        )
        .await
        .unwrap();
        assert!(c
            .fetched_at(&s, EntityKind::Product, vec![1, 2])
            .await
            .unwrap()
            .is_empty());
        c.mark_fetched(&s, EntityKind::Product, vec![2, 3], 777)
            .await
            .unwrap();
        let at = c
            .fetched_at(&s, EntityKind::Product, vec![1, 2, 3])
            .await
            .unwrap();
        assert_eq!(at, [(2, 777)].into());
    }
}

#[tokio::test]
async fn a_full_sync_stages_assembles_and_drops_what_it_did_not_see() {
    for (c, _dir) in stores().await {
        let s = shop("a");
        let other = shop("b");
        // Before: products 1..=3 of generation 1, with inventory items.
        let rows = (1..=3).map(|i| row(i, "old", None)).collect();
        c.put(&s, EntityKind::Product, rows, 1).await.unwrap();
        c.set_inventory_items_of(&s, (1..=3).map(|p| (p, vec![(10 * p, p)])).collect(), 1)
            .await
            .unwrap();
        c.set_bulk(&s, Some(("op", BulkStage::Products)))
            .await
            .unwrap();

        c.stage_products(
            &s,
            vec![(3, b"p3".to_vec()), (1, b"x".to_vec()), (1, b"p1".to_vec())],
        )
        .await
        .unwrap();
        c.stage_products(&s, vec![(5, b"p5".to_vec())])
            .await
            .unwrap();
        c.stage_products(&other, vec![(2, b"other".to_vec())])
            .await
            .unwrap();
        c.stage_variants(
            &s,
            vec![
                (3, 31, b"v31".to_vec()),
                (1, 12, b"v12".to_vec()),
                (1, 11, b"old".to_vec()),
                (1, 11, b"v11".to_vec()),
            ],
        )
        .await
        .unwrap();
        // Parents in byte order: upper case before lower case, as SQLite orders them.
        c.stage_children(
            &s,
            vec![
                ("gid://b".into(), 2, b"b2".to_vec()),
                ("gid://B".into(), 5, b"B5".to_vec()),
                ("gid://b".into(), 1, b"b1".to_vec()),
                ("gid://a".into(), 9, b"a9".to_vec()),
            ],
        )
        .await
        .unwrap();

        let page = c.staged_products(&s, 0, 2).await.unwrap();
        assert_eq!(
            page,
            vec![(1, b"p1".to_vec()), (3, b"p3".to_vec())],
            "{}",
            name(&c)
        );
        assert_eq!(
            c.staged_products(&s, 3, usize::MAX).await.unwrap(),
            vec![(5, b"p5".to_vec())]
        );
        assert_eq!(
            c.staged_variants_of(&s, vec![3, 1, 7]).await.unwrap(),
            vec![
                (1, 11, b"v11".to_vec()),
                (1, 12, b"v12".to_vec()),
                (3, 31, b"v31".to_vec())
            ]
        );
        assert!(c.staged_variants_of(&s, vec![]).await.unwrap().is_empty());
        assert_eq!(
            c.staged_children_of(
                &s,
                vec!["gid://b".into(), "gid://B".into(), "gid://a".into()]
            )
            .await
            .unwrap(),
            vec![
                ("gid://B".into(), b"B5".to_vec()),
                ("gid://a".into(), b"a9".to_vec()),
                ("gid://b".into(), b"b1".to_vec()),
                ("gid://b".into(), b"b2".to_vec()),
            ]
        );
        assert!(c.staged_children_of(&s, vec![]).await.unwrap().is_empty());

        // The sync saw products 1, 3 and 5 (generation 2); 2 and its item go.
        let rows = [1, 3, 5].into_iter().map(|i| row(i, "new", None)).collect();
        c.put(&s, EntityKind::Product, rows, 2).await.unwrap();
        assert_eq!(c.finish_full_sync(&s, 2, 999).await.unwrap(), 1);
        assert_eq!(c.ids(&s, EntityKind::Product).await.unwrap(), vec![1, 3, 5]);
        assert_eq!(c.product_of_item(&s, 20).await.unwrap(), None);
        assert_eq!(c.product_of_item(&s, 30).await.unwrap(), Some(3));
        let st = c.state(&s).await.unwrap();
        assert_eq!(
            (st.generation, st.full_synced_at, st.bulk),
            (2, Some(999), None)
        );
        assert!(c.staged_products(&s, 0, 10).await.unwrap().is_empty());
        assert!(c
            .staged_variants_of(&s, vec![1, 3])
            .await
            .unwrap()
            .is_empty());
        assert!(c
            .staged_children_of(&s, vec!["gid://b".into()])
            .await
            .unwrap()
            .is_empty());
        // Another shop's staging is its own.
        assert_eq!(c.staged_products(&other, 0, 10).await.unwrap().len(), 1);
        c.clear_staging(&other).await.unwrap();
        assert!(c.staged_products(&other, 0, 10).await.unwrap().is_empty());
    }
}

#[tokio::test]
async fn removing_a_shop_removes_all_of_it_and_nothing_else() {
    for (c, _dir) in stores().await {
        let (a, b) = (shop("a"), shop("b"));
        for s in [&a, &b] {
            c.put(s, EntityKind::Product, vec![row(1, "p", Some("h"))], 1)
                .await
                .unwrap();
            c.set_inventory_items(s, 1, vec![(10, 11)], 1)
                .await
                .unwrap();
            c.stage_products(s, vec![(1, b"p".to_vec())]).await.unwrap();
            c.stage_variants(s, vec![(1, 2, b"v".to_vec())])
                .await
                .unwrap();
            c.stage_children(s, vec![("gid://p".into(), 1, b"c".to_vec())])
                .await
                .unwrap();
            c.set_shop_body(s, b"{}".to_vec()).await.unwrap();
        }
        c.remove_shop(&a).await.unwrap();
        assert_eq!(c.count(&a, EntityKind::Product).await.unwrap(), 0);
        assert_eq!(c.product_of_item(&a, 10).await.unwrap(), None);
        assert_eq!(c.shop_body(&a).await.unwrap(), None);
        assert_eq!(c.state(&a).await.unwrap(), ShopState::default());
        assert!(c.staged_products(&a, 0, 10).await.unwrap().is_empty());
        assert!(c.staged_variants_of(&a, vec![1]).await.unwrap().is_empty());
        assert!(c
            .staged_children_of(&a, vec!["gid://p".into()])
            .await
            .unwrap()
            .is_empty());
        assert_eq!(
            c.count(&b, EntityKind::Product).await.unwrap(),
            1,
            "{}",
            name(&c)
        );
        assert_eq!(c.product_of_item(&b, 10).await.unwrap(), Some(1));
        assert_eq!(c.staged_variants_of(&b, vec![1]).await.unwrap().len(), 1);
        assert_eq!(c.handle_of(&b, 1).await.unwrap().as_deref(), Some("h"));
    }
}

#[tokio::test]
async fn a_scan_stops_when_told_to() {
    for (c, _dir) in stores().await {
        let s = shop("a");
        let rows = (1..=2000)
            .rev()
            .map(|i| row(i, &i.to_string(), None))
            .collect();
        c.put(&s, EntityKind::Discount, rows, 1).await.unwrap();
        // Taking 700 drops the stream after the 700th.
        let seen: Vec<String> = c
            .bodies(&s, EntityKind::Discount)
            .take(700)
            .map(|b| String::from_utf8(b.unwrap().to_vec()).unwrap())
            .collect()
            .await;
        let expect: Vec<String> = (1..=700).map(|i| i.to_string()).collect();
        assert_eq!(seen, expect, "{}", name(&c));
    }
}

/// Products `ids`, with bodies of `BODY` bytes naming their id and `version`.
async fn put_products(c: &CatalogStore, s: &ShopDomain, ids: Vec<i64>, version: &str) {
    let rows = ids
        .into_iter()
        .map(|i| row(i, &body(i, version), None))
        .collect();
    c.put(s, EntityKind::Product, rows, 1).await.unwrap();
}

fn body(id: i64, version: &str) -> String {
    let head = format!("{version}-{id}-");
    format!("{head}{}", "x".repeat(BODY - head.len()))
}

const BODY: usize = 500;
/// Rows of a long scan (more than a reader gets ahead: see the test below); the writer in the
/// snapshot test changes those from `LATER` on.
const MANY: i64 = 6000;
const LATER: i64 = 4000;

#[test]
fn the_rows_before_later_are_more_than_a_scan_reads_ahead() {
    // Otherwise the tests below could pass with a reader that reads everything at once.
    assert!((LATER as usize - 1) * BODY > scan::READ_AHEAD_BYTES);
}

/// A scan reads one snapshot: what a writer commits while the consumer is still reading
/// (rows after the part already read changed, deleted, added) is not in it.
#[tokio::test]
async fn a_scan_reads_one_snapshot_while_a_writer_changes_rows() {
    for (c, _dir) in stores().await {
        let s = shop("a");
        put_products(&c, &s, (1..=MANY).collect(), "v1").await;
        let mut bodies = c.bodies(&s, EntityKind::Product);
        let mut got = vec![bodies.try_next().await.unwrap().unwrap()];

        put_products(&c, &s, (LATER..=MANY).collect(), "v2").await;
        c.delete(
            &s,
            EntityKind::Product,
            (LATER + 500..LATER + 600).collect(),
        )
        .await
        .unwrap();
        put_products(&c, &s, (MANY + 1..=MANY + 50).collect(), "v2").await;

        got.extend(bodies.try_collect::<Vec<_>>().await.unwrap());
        let want: Vec<Vec<u8>> = (1..=MANY).map(|i| body(i, "v1").into_bytes()).collect();
        let first_difference = got.iter().zip(&want).position(|(g, w)| g != w);
        assert_eq!(
            (got.len(), first_difference),
            (want.len(), None),
            "{}",
            name(&c)
        );
        // The next scan sees what the writer did.
        let now = scan(&c, &s, EntityKind::Product).await;
        assert_eq!(now.len() as i64, MANY - 100 + 50);
        let later = LATER as usize - 1;
        assert_eq!(now[later - 1], body(LATER - 1, "v1").into_bytes());
        assert_eq!(now[later], body(LATER, "v2").into_bytes());
        assert_eq!(now.last().unwrap(), &body(MANY + 50, "v2").into_bytes());
    }
}

/// Whether a scan still holds its snapshot. SQLite: a reader of the WAL keeps a TRUNCATE
/// checkpoint from resetting it (the pragma answers busy = 1). PostgreSQL: a client other
/// than this one is in a transaction.
async fn a_reader_is_open(c: &CatalogStore) -> bool {
    match c.backend() {
        Backend::Sqlite(db) => {
            let path = db.path().to_path_buf();
            tokio::task::spawn_blocking(move || {
                let conn = rusqlite::Connection::open(path).unwrap();
                conn.busy_timeout(Duration::from_millis(50)).unwrap();
                let busy: i64 = conn
                    .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))
                    .unwrap();
                busy == 1
            })
            .await
            .unwrap()
        }
        Backend::Postgres(pg) => {
            let n: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND pid <> pg_backend_pid()
                   AND backend_type = 'client backend' AND xact_start IS NOT NULL",
            )
            .fetch_one(pg.pool())
            .await
            .unwrap();
            n > 0
        }
    }
}

/// A consumer that stops early drops the stream: the reader, which waits for it a few chunks
/// ahead (not at the end of the catalogue), lets go of its snapshot.
#[tokio::test]
async fn dropping_a_scan_ends_its_reader() {
    for (c, _dir) in stores().await {
        let s = shop("a");
        // (Before the rows are written: on SQLite the check empties the WAL, and a reader
        // of an empty WAL reads the file alone, which no checkpoint waits for.)
        assert!(!a_reader_is_open(&c).await, "{}", name(&c));
        put_products(&c, &s, (1..=MANY).collect(), "v1").await;
        // A write after the rows: should SQLite have checkpointed the whole WAL meanwhile
        // (every 1,000 pages), this puts a frame in it again for the reader to hold.
        c.set_built_at(&s, 1).await.unwrap();
        let mut bodies = c.bodies(&s, EntityKind::Product);
        for i in 1..=10 {
            let b = bodies.try_next().await.unwrap().unwrap();
            assert_eq!(b, body(i, "v1").into_bytes());
        }
        assert!(a_reader_is_open(&c).await, "{}: reading", name(&c));
        drop(bodies);
        let deadline = Instant::now() + Duration::from_secs(10);
        while a_reader_is_open(&c).await {
            assert!(Instant::now() < deadline, "{}: still reading", name(&c));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A scan that fails ends its stream with the error (never just a shorter catalogue).
#[tokio::test]
async fn a_failing_scan_ends_with_its_error() {
    for (c, _dir) in stores().await {
        let s = shop("a");
        put_products(&c, &s, vec![1, 2], "v1").await;
        match c.backend() {
            Backend::Sqlite(db) => db
                .call(|c| Ok(c.execute_batch("DROP TABLE entities")?))
                .await
                .unwrap(),
            Backend::Postgres(pg) => {
                sqlx::query("DROP TABLE entities")
                    .execute(pg.pool())
                    .await
                    .unwrap();
            }
        }
        let got: Vec<Result<bytes::Bytes, StoreError>> =
            c.bodies(&s, EntityKind::Product).collect().await;
        assert!(matches!(got.as_slice(), [Err(_)]), "{}: {got:?}", name(&c));
    }
}

/// A full catalogue on PostgreSQL: ~20,000 products put in a full sync's batches and
/// streamed back whole, in id order, by pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_streams_a_large_catalogue_in_id_order() {
    let Some(pg) = crate::store::postgres::test_db().await else {
        return;
    };
    let c = CatalogStore::on_postgres(pg);
    let s = shop("big");
    const N: i64 = 20_000;
    // Ids spread out and put out of order, in batches of 250 as a full sync writes them.
    let mut ids: Vec<i64> = (0..N)
        .map(|i| 7_000_000_000 + (i * 7919) % N * 13)
        .collect();
    ids.reverse();
    for batch in ids.chunks(250) {
        let rows = batch
            .iter()
            .map(|id| EntityRow {
                id: *id,
                body: format!(r#"{{"id":{id},"title":"{}"}}"#, "x".repeat(900)).into_bytes(),
                handle: Some(format!("p-{id}")),
                updated_at: None,
            })
            .collect();
        assert_eq!(
            c.put(&s, EntityKind::Product, rows, 1).await.unwrap(),
            batch.len()
        );
    }
    assert_eq!(c.count(&s, EntityKind::Product).await.unwrap(), N);
    let bodies = scan(&c, &s, EntityKind::Product).await;
    let got: Vec<i64> = bodies
        .iter()
        .map(|b| {
            serde_json::from_slice::<serde_json::Value>(b).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    let mut want = ids.clone();
    want.sort_unstable();
    want.dedup();
    assert_eq!(want.len() as i64, N, "the test's ids are distinct");
    assert_eq!(got, want);
}
