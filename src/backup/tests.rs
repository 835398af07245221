use std::collections::HashMap;

use secrecy::{ExposeSecret, SecretString};

use super::restore::open_read_only;
use super::*;
use crate::config::StorageSettings;
use crate::crypto::TokenCipher;
use crate::ids::{PageId, ShopDomain};
use crate::store::tokens::ShopGrant;
use crate::store::{Db, SessionStore, TokenStore};

const KEY_B64: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn settings(dir: &Path, keep: usize) -> Settings {
    let p = |n: &str| dir.join(n).display().to_string();
    let vars: HashMap<String, String> = [
        ("TOKEN_DB_PATH", p("live/tokens.db")),
        ("SESSION_DB_PATH", p("live/sessions.db")),
        ("EVENTS_DB_PATH", p("live/events.db")),
        ("BACKUP_DIR", p("backups")),
        ("STORAGE_DIR", p("objects")),
        ("BACKUP_KEEP", keep.to_string()),
        ("TOKEN_ENCRYPTION_KEY", KEY_B64.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let s = Settings::from_vars(&vars).unwrap();
    // A service that has run once has its token database.
    drop(crate::store::open_connection(&s.token_db_path, DbKind::Tokens).unwrap());
    s
}

fn tokens(s: &Settings) -> TokenStore {
    TokenStore::new(
        Db::open(&s.token_db_path, DbKind::Tokens).unwrap(),
        TokenCipher::new(s.token_key_bytes()),
    )
}

fn sessions(s: &Settings) -> SessionStore {
    SessionStore::new(Db::open(&s.session_db_path, DbKind::Sessions).unwrap())
}

fn grant(token: &str) -> ShopGrant {
    ShopGrant {
        access_token: SecretString::from(token.to_string()),
        scopes: "read_products".into(),
        expires_at: None,
        refresh_token: None,
        refresh_token_expires_at: None,
    }
}

fn remove_db_files(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}

fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

fn set_dirs(backup_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(backup_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| parse_set_name(n).is_some())
        .collect();
    v.sort_by_key(|n| parse_set_name(n).unwrap());
    v
}

#[test]
fn timestamps_and_set_names() {
    assert_eq!(set_timestamp(0), "19700101T000000Z");
    assert_eq!(rfc3339(1_795_317_300), "2026-11-22T03:15:00Z");
    assert_eq!(set_timestamp(1_795_317_300), "20261122T031500Z");
    assert_eq!(parse_set_name("20261122T031500Z"), Some((1_795_317_300, 0)));
    assert_eq!(
        parse_set_name("20261122T031500Z-12"),
        Some((1_795_317_300, 12))
    );
    for t in [0, 951_782_400, 1_709_164_800, 4_102_444_799] {
        assert_eq!(parse_set_name(&set_timestamp(t)), Some((t, 0)));
    }
    for bad in [
        "",
        "latest",
        "pre-restore-20261122T031500Z",
        "20261122T031500",
        "20261122T031500Z-",
        "20261122T031500Z-x",
        "20261322T031500Z",
        "2026112xT031500Z",
        "20261122T031500Z/..",
    ] {
        assert!(parse_set_name(bad).is_none(), "{bad:?} accepted");
    }
}

#[test]
fn prune_plan_keeps_newest_complete_sets_and_ignores_other_names() {
    let now = 1_795_317_300;
    let sets: Vec<(String, bool)> = vec![
        ("20261120T031500Z".into(), true),
        ("20261121T031500Z".into(), true),
        ("20261122T031500Z".into(), true),
        ("20261122T031500Z-1".into(), true),
        ("20261119T000000Z".into(), false), // stale incomplete
        ("20261122T031400Z".into(), false), // a minute old: maybe running elsewhere
        ("notes".into(), true),
    ];
    let mut doomed = plan_prune(&sets, 2, now);
    doomed.sort();
    assert_eq!(
        doomed,
        vec![
            "20261119T000000Z".to_string(),
            "20261120T031500Z".to_string(),
            "20261121T031500Z".to_string()
        ]
    );
}

#[tokio::test]
async fn round_trip_restores_rows_and_merchant_uuids() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 3);
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    let page = PageId::parse("1234567").unwrap();
    let (merchant, session_id) = {
        let t = tokens(&s);
        let m = t
            .save_shop_grant(&shop, grant("shpat_secret"), None)
            .await
            .unwrap();
        t.save_page(
            &page,
            m,
            None,
            Some("Acme".into()),
            &SecretString::from("EAAB"),
        )
        .await
        .unwrap();
        let sid = sessions(&s).create(m).await.unwrap();
        (m, sid)
    };

    let report = backup_all(&s, None).await.unwrap();
    assert_eq!(report.files.len(), 3);
    assert!(report.set_dir.join(MANIFEST).is_file());
    for f in &report.files {
        assert!(f.path.is_file());
        assert_eq!(f.sha256.len(), 64);
        assert!(f.uploaded_key.is_none());
    }
    // Self-contained copies: no WAL files beside them.
    assert!(!report.set_dir.join("tokens.db-wal").exists());
    let summary = report.summary();
    assert!(
        summary.contains("tokens") && !summary.contains('\n'),
        "{summary}"
    );

    for p in [&s.token_db_path, &s.session_db_path, &s.events_db_path] {
        remove_db_files(p);
    }
    assert!(!s.token_db_path.exists());

    let r = restore(&s, &report.set_dir).unwrap();
    assert_eq!(r.restored.len(), 3);
    assert!(r.safety_copy.is_none(), "nothing was there to save");
    assert!(!r.summary().contains('\n'));

    let t = tokens(&s);
    let rec = t.shop(&shop).await.unwrap().expect("shop is back");
    assert_eq!(rec.merchant, merchant);
    assert_eq!(
        rec.access_token.unwrap().expose_secret(),
        "shpat_secret",
        "tokens still decrypt with the same key"
    );
    let p = t.page(&page).await.unwrap().expect("page is back");
    assert_eq!(p.merchant, merchant);
    assert_eq!(
        sessions(&s).merchant(&session_id).await.unwrap(),
        Some(merchant)
    );
    // Restored files are live databases again (WAL, migrated).
    let c = crate::store::open_connection(&s.token_db_path, DbKind::Tokens).unwrap();
    let mode: String = c
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn restore_replaces_a_database_that_is_open_and_keeps_a_safety_copy() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 3);
    let t = tokens(&s);
    let a = ShopDomain::parse("a.myshopify.com").unwrap();
    let b = ShopDomain::parse("b.myshopify.com").unwrap();
    let ma = t.save_shop_grant(&a, grant("ta"), None).await.unwrap();
    let report = backup_all(&s, None).await.unwrap();
    // Written after the backup, through a connection that stays open across the restore.
    t.save_shop_grant(&b, grant("tb"), None).await.unwrap();

    let set = report.set_dir.clone();
    let s2 = settings(dir.path(), 3);
    let r = tokio::task::spawn_blocking(move || restore(&s2, &set))
        .await
        .unwrap()
        .unwrap();

    // The open connection sees the restored database.
    assert!(t.shop(&b).await.unwrap().is_none());
    assert_eq!(t.shop(&a).await.unwrap().unwrap().merchant, ma);

    // The pre-restore copy holds what was replaced, and is itself a restorable set.
    let safety = r.safety_copy.expect("a safety copy");
    assert!(safety
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with(PRE_RESTORE_PREFIX));
    verify_set(&safety).unwrap();
    let c = open_read_only(&safety.join("tokens.db")).unwrap();
    let n: i64 = c
        .query_row("SELECT count(*) FROM shops", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn retention_keeps_backup_keep_sets_and_nothing_else_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 2);
    std::fs::create_dir_all(s.backup_dir.join("keep-me")).unwrap();
    std::fs::create_dir_all(s.backup_dir.join("pre-restore-20200101T000000Z")).unwrap();
    std::fs::write(s.backup_dir.join("notes.txt"), "hi").unwrap();
    let mut made = Vec::new();
    for _ in 0..4 {
        let r = backup_all(&s, None).await.unwrap();
        made.push(r.set_name());
    }
    let left = set_dirs(&s.backup_dir);
    assert_eq!(left, made[2..].to_vec(), "the two newest sets remain");
    assert!(s.backup_dir.join("keep-me").is_dir());
    assert!(s.backup_dir.join("pre-restore-20200101T000000Z").is_dir());
    assert!(s.backup_dir.join("notes.txt").is_file());
}

#[tokio::test]
async fn a_corrupted_backup_is_refused_and_live_databases_are_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 3);
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    {
        let t = tokens(&s);
        t.save_shop_grant(&shop, grant("x"), None).await.unwrap();
    }
    let report = backup_all(&s, None).await.unwrap();
    {
        // Live data moves on after the backup.
        let t = tokens(&s);
        let other = ShopDomain::parse("other.myshopify.com").unwrap();
        t.save_shop_grant(&other, grant("y"), None).await.unwrap();
    }
    let before: Vec<Vec<u8>> = [&s.token_db_path, &s.session_db_path, &s.events_db_path]
        .iter()
        .map(|p| file_bytes(p))
        .collect();

    let victim = report.set_dir.join("tokens.db");
    let mut bytes = file_bytes(&victim);
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0xff;
    }
    std::fs::write(&victim, &bytes).unwrap();

    let err = restore(&s, &report.set_dir).unwrap_err().to_string();
    assert!(err.contains("tokens.db"), "{err}");
    assert!(err.contains("damaged"), "{err}");
    assert!(!err.contains('\n'), "{err}");

    let after: Vec<Vec<u8>> = [&s.token_db_path, &s.session_db_path, &s.events_db_path]
        .iter()
        .map(|p| file_bytes(p))
        .collect();
    assert!(before == after, "live databases were modified");
    let names: Vec<String> = std::fs::read_dir(&s.backup_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        !names.iter().any(|n| n.starts_with(PRE_RESTORE_PREFIX)),
        "nothing is done before verification passes: {names:?}"
    );
}

#[tokio::test]
async fn a_corruption_that_keeps_the_hash_is_caught_by_the_integrity_check() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 3);
    {
        let t = tokens(&s);
        for i in 0..200 {
            let d = ShopDomain::parse(&format!("s{i}.myshopify.com")).unwrap();
            t.save_shop_grant(&d, grant("x"), None).await.unwrap();
        }
    }
    let report = backup_all(&s, None).await.unwrap();
    let victim = report.set_dir.join("tokens.db");
    let mut bytes = file_bytes(&victim);
    // Wreck the b-tree page headers of every page but the first.
    let page = 4096;
    for p in (page..bytes.len()).step_by(page) {
        bytes[p] = 0x42;
        bytes[p + 1..p + 8].fill(0xff);
    }
    std::fs::write(&victim, &bytes).unwrap();
    // Someone "fixes" the manifest to match: the integrity check must still refuse it.
    let mpath = report.set_dir.join(MANIFEST);
    let mut m: Manifest = serde_json::from_slice(&file_bytes(&mpath)).unwrap();
    for f in &mut m.files {
        if f.db == "tokens" {
            f.sha256 = sha256_file(&victim).unwrap().1;
        }
    }
    std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
    let err = restore(&s, &report.set_dir).unwrap_err().to_string();
    assert!(err.contains("tokens.db"), "{err}");
    assert!(!err.contains('\n'), "{err}");
}

#[tokio::test]
async fn a_set_missing_a_database_or_its_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 5);
    let a = backup_all(&s, None).await.unwrap();
    let b = backup_all(&s, None).await.unwrap();
    let tokens_before = file_bytes(&s.token_db_path);

    std::fs::remove_file(a.set_dir.join("events.db")).unwrap();
    let err = restore(&s, &a.set_dir).unwrap_err().to_string();
    assert!(
        err.contains("events.db") && err.contains("missing"),
        "{err}"
    );

    std::fs::remove_file(b.set_dir.join(MANIFEST)).unwrap();
    let err = restore(&s, &b.set_dir).unwrap_err().to_string();
    assert!(err.contains(MANIFEST) && err.contains("missing"), "{err}");

    // A manifest that leaves a database out is refused too.
    let c = backup_all(&s, None).await.unwrap();
    let mpath = c.set_dir.join(MANIFEST);
    let mut m: Manifest = serde_json::from_slice(&file_bytes(&mpath)).unwrap();
    m.files.retain(|f| f.db != "sessions");
    std::fs::write(&mpath, serde_json::to_vec(&m).unwrap()).unwrap();
    let err = restore(&s, &c.set_dir).unwrap_err().to_string();
    assert!(err.contains("sessions"), "{err}");

    let err = restore(&s, &dir.path().join("nope"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a folder"), "{err}");

    assert_eq!(file_bytes(&s.token_db_path), tokens_before);
}

#[tokio::test]
async fn a_backup_with_no_database_at_all_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 3);
    std::fs::remove_dir_all(s.token_db_path.parent().unwrap()).unwrap();
    let err = backup_all(&s, None).await.unwrap_err().to_string();
    assert!(err.contains("no database found"), "{err}");
    assert!(!s.backup_dir.exists() || std::fs::read_dir(&s.backup_dir).unwrap().next().is_none());
}

#[tokio::test]
async fn a_backup_creates_a_database_that_is_missing_so_every_set_is_complete() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 3);
    let r = backup_all(&s, None).await.unwrap();
    let dbs: Vec<&str> = r.files.iter().map(|f| f.db).collect();
    assert_eq!(dbs, vec!["tokens", "sessions", "events"]);
    assert!(s.events_db_path.is_file());
    let m = verify_set(&r.set_dir).unwrap();
    assert_eq!(m.files.len(), 3);
    assert!(m.files.iter().all(|f| f.schema_version >= 1));
}

#[tokio::test]
async fn backup_uploads_the_set_under_backups_and_prunes_remote_sets() {
    let dir = tempfile::tempdir().unwrap();
    let s = settings(dir.path(), 2);
    let objects_dir = dir.path().join("objects");
    let store = ObjectStore::from_settings(&StorageSettings::Local {
        dir: objects_dir.clone(),
    })
    .unwrap();
    let mut names = Vec::new();
    for _ in 0..3 {
        let r = backup_all(&s, Some(&store)).await.unwrap();
        let set = r.set_name();
        for f in &r.files {
            let key = f.uploaded_key.as_deref().expect("uploaded");
            assert_eq!(key, format!("backups/{set}/{}.db", f.db));
            let stored = std::fs::read(objects_dir.join(key)).unwrap();
            assert_eq!(crate::crypto::sha256_hex(&stored), f.sha256);
        }
        let manifest = std::fs::read(objects_dir.join(format!("backups/{set}/{MANIFEST}")));
        assert!(manifest.is_ok(), "manifest uploaded");
        assert!(r.summary().contains("uploaded"), "{}", r.summary());
        names.push(set);
    }
    let keys = store.list(&keys::backups_prefix()).await.unwrap();
    let mut remote_sets: Vec<String> = keys
        .iter()
        .map(|k| k.as_str().split('/').nth(1).unwrap().to_string())
        .collect();
    remote_sets.sort_by_key(|n| parse_set_name(n).unwrap());
    remote_sets.dedup();
    assert_eq!(remote_sets, names[1..].to_vec());
    assert_eq!(keys.len(), 2 * 4);
}

#[test]
fn a_backup_taken_during_writes_holds_a_consistent_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("events.db");
    drop(crate::store::open_connection(&db, DbKind::Events).unwrap());
    // Enough rows for many backup steps.
    let w = crate::store::open_connection(&db, DbKind::Events).unwrap();
    let insert = |c: &Connection, i: i64| {
        c.execute(
            "INSERT INTO events (kind, pool, dedupe_key, group_key, payload, run_at, received_at)
             VALUES ('k', 'messages', ?1, 'g', zeroblob(2000), 0, 0)",
            [format!("d{i}")],
        )
        .unwrap();
    };
    w.execute_batch("BEGIN").unwrap();
    for i in 0..8000 {
        insert(&w, i);
    }
    w.execute_batch("COMMIT").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let db = db.clone();
        std::thread::spawn(move || {
            let c = crate::store::open_connection(&db, DbKind::Events).unwrap();
            let mut i = 1_000_000;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                insert(&c, i);
                i += 1;
            }
            i - 1_000_000
        })
    };
    std::thread::sleep(Duration::from_millis(20));
    let dest = dir.path().join("copy.db");
    let c = copy_database(&db, DbKind::Events, &dest).unwrap();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let written = writer.join().unwrap();
    assert!(written > 0, "the writer kept writing");
    let copy = open_read_only(&dest).unwrap();
    integrity_check(&copy).unwrap();
    let n: i64 = copy
        .query_row(
            "SELECT count(*) FROM events WHERE dedupe_key LIKE 'd%' AND length(dedupe_key) < 6",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(n, 8000);
    assert_eq!(
        c.schema_version,
        latest_schema_version(DbKind::Events).unwrap()
    );
}
