//! The binary's configuration handling and exit codes.

use std::collections::HashMap;

use crate::helpers::*;

#[test]
fn production_without_secrets_exits_nonzero_naming_every_variable() {
    let dir = tempfile::tempdir().unwrap();
    let env: HashMap<String, String> = [("APP_ENV".to_string(), "production".to_string())].into();
    let out = binary_command(dir.path(), &env)
        .arg("serve")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "one message: {err}");
    for name in [
        "SHOPIFY_API_KEY",
        "SHOPIFY_API_SECRET",
        "FACEBOOK_APP_ID",
        "FACEBOOK_APP_SECRET",
        "STATE_TOKEN_SECRET",
        "TOKEN_ENCRYPTION_KEY",
        "SPACES_BUCKET",
    ] {
        assert!(err.contains(name), "{name} not named: {err}");
    }
}

#[test]
fn production_with_malformed_key_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let env: HashMap<String, String> = [
        ("APP_ENV", "production"),
        ("TOKEN_ENCRYPTION_KEY", "bm90IDMyIGJ5dGVz"),
        ("STATE_TOKEN_SECRET", "short"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let out = binary_command(dir.path(), &env)
        .arg("check-config")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("TOKEN_ENCRYPTION_KEY is malformed"), "{err}");
    assert!(err.contains("STATE_TOKEN_SECRET is malformed"), "{err}");
}

#[test]
fn check_config_masks_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = test_vars(dir.path(), &[]);
    env.insert("SHOPIFY_API_KEY".into(), "visible-key".into());
    env.insert("SHOPIFY_API_SECRET".into(), "hidden-shopify-secret".into());
    env.insert("SPACES_API_KEY".into(), "alias-key".into());
    env.insert("SPACES_API_SECRET".into(), "hidden-spaces-secret".into());
    env.insert("SPACES_BUCKET".into(), "bucket".into());
    let out = binary_command(dir.path(), &env)
        .arg("check-config")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("visible-key"), "{text}");
    assert!(text.contains("SPACES_BUCKET"), "{text}");
    for secret in [
        "hidden-shopify-secret",
        "hidden-spaces-secret",
        STATE_SECRET,
        ENCRYPTION_KEY_B64,
    ] {
        assert!(!text.contains(secret), "secret printed: {text}");
    }
}

#[test]
fn help_is_available() {
    let dir = tempfile::tempdir().unwrap();
    let out = binary_command(dir.path(), &HashMap::new())
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("serve") && text.contains("check-config"),
        "{text}"
    );
}

/// No configuration at all: the service starts on the embedded defaults (local store under
/// ./data) and answers /healthz.
#[tokio::test]
async fn starts_with_no_configuration() {
    let dir = tempfile::tempdir().unwrap();
    // Only the port is overridden so parallel tests do not collide on 5000.
    let env: HashMap<String, String> =
        [("BIND_ADDR".to_string(), "127.0.0.1:0".to_string())].into();
    let server = spawn_binary(dir.path(), env);
    let r = reqwest::get(server.url("/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(dir.path().join("data/tokens.db").exists());
    assert!(dir.path().join("data/objects").is_dir());
    let (status, logs) = server.terminate();
    assert!(status.success(), "{logs}");
    assert!(
        logs.contains("TOKEN_ENCRYPTION_KEY is not set"),
        "loud warning expected: {logs}"
    );
}

/// `.env.example` copied to `.env` as it is must load and describe a valid configuration.
#[test]
fn env_example_loads_as_a_dot_env() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".env.example"),
        dir.path().join(".env"),
    )
    .unwrap();
    let out = binary_command(dir.path(), &HashMap::new())
        .arg("check-config")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    // The column width follows the longest variable name, so compare without it.
    assert!(
        text.lines().any(|l| l.starts_with("POLL_SCHEDULE ")
            && l.trim_start_matches("POLL_SCHEDULE").trim_start() == "= 0 0 0 * * *"),
        "{text}"
    );
}

const NEW_KEY_B64: &str = "bmV3LWtleS1uZXcta2V5LW5ldy1rZXktbmV3LWtleSE=";

/// The tokens store of the app on `dir` (SQLite file or PostgreSQL database), reading with
/// `key_b64`.
async fn token_store(dir: &std::path::Path, key_b64: &str) -> salesbot_sync::store::TokenStore {
    stores_of(dir, &vars(&[("TOKEN_ENCRYPTION_KEY", key_b64)]))
        .await
        .tokens
}

/// The shop's token as `key_b64` decrypts it (`None`: it does not).
async fn shop_token(dir: &std::path::Path, key_b64: &str) -> Option<String> {
    use secrecy::ExposeSecret;
    let shop = salesbot_sync::ids::ShopDomain::parse("acme.myshopify.com").unwrap();
    let rec = token_store(dir, key_b64).await.shop(&shop).await.ok()??;
    rec.access_token.map(|t| t.expose_secret().to_string())
}

async fn save_shop_token(dir: &std::path::Path) {
    let shop = salesbot_sync::ids::ShopDomain::parse("acme.myshopify.com").unwrap();
    let grant = salesbot_sync::store::tokens::ShopGrant {
        access_token: secrecy::SecretString::from("shpat_edge_token".to_string()),
        scopes: "read_products".into(),
        expires_at: None,
        refresh_token: None,
        refresh_token_expires_at: None,
    };
    token_store(dir, ENCRYPTION_KEY_B64)
        .await
        .save_shop_grant(&shop, grant, None)
        .await
        .unwrap();
}

/// `rotate-key` beside a running server would leave the server writing under the old key:
/// it refuses (exit 2, saying why) and changes nothing; once the server is stopped it runs.
#[tokio::test]
async fn rotate_key_refuses_while_a_server_runs() {
    let dir = tempfile::tempdir().unwrap();
    save_shop_token(dir.path()).await;
    let server = start_binary(dir.path(), &[]);
    let mut env = test_vars(dir.path(), &[]);
    env.insert("NEW_TOKEN_ENCRYPTION_KEY".into(), NEW_KEY_B64.into());
    let out = binary_command(dir.path(), &env)
        .arg("rotate-key")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("rotate-key refused") && err.contains("stop the server first"),
        "{err}"
    );
    assert!(!err.contains(NEW_KEY_B64) && !err.contains(ENCRYPTION_KEY_B64));
    assert_eq!(
        shop_token(dir.path(), ENCRYPTION_KEY_B64).await.as_deref(),
        Some("shpat_edge_token"),
        "still under the one current key"
    );
    assert_eq!(shop_token(dir.path(), NEW_KEY_B64).await, None);

    let (status, logs) = server.terminate();
    assert!(status.success(), "{logs}");
    let out = binary_command(dir.path(), &env)
        .arg("rotate-key")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        shop_token(dir.path(), NEW_KEY_B64).await.as_deref(),
        Some("shpat_edge_token")
    );
    assert_eq!(shop_token(dir.path(), ENCRYPTION_KEY_B64).await, None);
}

/// The backends holding the instances lock on the PostgreSQL database of `db`.
async fn instance_lock_holders(db: &salesbot_sync::store::postgres::PgDb) -> Vec<i32> {
    sqlx::query_scalar(
        "SELECT pid FROM pg_locks
         WHERE locktype = 'advisory' AND granted AND objsubid = 1
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
           AND classid::bigint = ($1 >> 32) AND objid::bigint = ($1 & 4294967295)",
    )
    .bind(salesbot_sync::store::postgres::INSTANCES_LOCK)
    .fetch_all(db.pool())
    .await
    .unwrap()
}

/// A database restart ends the session that held a server's instances lock: the server takes
/// it again, so `rotate-key` still refuses to run beside it (and change keys under it).
#[tokio::test]
async fn a_server_takes_its_instance_lock_again_after_losing_its_database_session() {
    if !on_postgres() {
        return; // the instances lock is PostgreSQL's (SQLite: the queue file's lock)
    }
    let dir = tempfile::tempdir().unwrap();
    save_shop_token(dir.path()).await;
    let server = start_binary(dir.path(), &[]);
    let db = stores_of(dir.path(), &[]).await.postgres.unwrap();
    let before = instance_lock_holders(&db).await;
    assert_eq!(before.len(), 1, "the server holds the lock: {before:?}");
    // What a database restart does to the server's session.
    let ended: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(before[0])
        .fetch_one(db.pool())
        .await
        .unwrap();
    assert!(ended);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut retaken = false;
    while !retaken && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let now = instance_lock_holders(&db).await;
        retaken = now.len() == 1 && now != before;
    }
    let mut env = test_vars(dir.path(), &[]);
    env.insert("NEW_TOKEN_ENCRYPTION_KEY".into(), NEW_KEY_B64.into());
    let out = binary_command(dir.path(), &env)
        .arg("rotate-key")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(2),
        "lock taken again: {retaken}; {err}"
    );
    assert!(
        err.contains("rotate-key refused") && err.contains("instances lock"),
        "{err}"
    );
    assert_eq!(
        shop_token(dir.path(), ENCRYPTION_KEY_B64).await.as_deref(),
        Some("shpat_edge_token"),
        "still under the one current key"
    );
    assert!(retaken);
    let (status, logs) = server.terminate();
    assert!(status.success(), "{logs}");
    assert!(logs.contains("took it again"), "{logs}");
}

/// Work in the queue within the last lease means a server is likely running even when no
/// lock says so: `rotate-key` refuses (exit 2, saying why), and runs once the queue is quiet.
#[tokio::test]
async fn rotate_key_refuses_while_the_queue_shows_recent_work() {
    use salesbot_sync::jobs::Job;
    use salesbot_sync::shopify::jobs::{ShopifySync, SyncReason};
    let dir = tempfile::tempdir().unwrap();
    save_shop_token(dir.path()).await;
    // An event just received, as a server whose lock went unnoticed would leave it.
    let sync = ShopifySync {
        shop: salesbot_sync::ids::ShopDomain::parse("acme.myshopify.com").unwrap(),
        reason: SyncReason::Initial { installed_at: 1 },
    };
    stores_of(dir.path(), &[])
        .await
        .events
        .enqueue(sync.to_event())
        .await
        .unwrap();
    let mut env = test_vars(dir.path(), &vars(&[("JOB_LEASE_SECS", "3")]));
    env.insert("NEW_TOKEN_ENCRYPTION_KEY".into(), NEW_KEY_B64.into());
    let rotate = || {
        binary_command(dir.path(), &env)
            .arg("rotate-key")
            .output()
            .unwrap()
    };
    let out = rotate();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("rotate-key refused") && err.contains("an event received"),
        "{err}"
    );
    assert_eq!(
        shop_token(dir.path(), ENCRYPTION_KEY_B64).await.as_deref(),
        Some("shpat_edge_token"),
        "nothing was changed"
    );
    // Once nothing has arrived for a lease (3 s here), it runs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let out = loop {
        let out = rotate();
        if out.status.success() || std::time::Instant::now() > deadline {
            break out;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        shop_token(dir.path(), NEW_KEY_B64).await.as_deref(),
        Some("shpat_edge_token")
    );
}

/// `restore` beside a running server refuses too, before touching anything.
#[tokio::test]
async fn restore_refuses_while_a_server_runs() {
    if on_postgres() {
        // Restoring SQLite files; on PostgreSQL `restore` always refuses (exit 2), see
        // `backup_and_restore_refuse_on_postgres`.
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    save_shop_token(dir.path()).await;
    let env = test_vars(dir.path(), &vars(&[(SQLITE_ONLY, "1")]));
    let settings = salesbot_sync::config::Settings::from_vars(&env).unwrap();
    let report = salesbot_sync::backup::backup_all(&settings, None)
        .await
        .unwrap();
    let server = start_binary(dir.path(), &vars(&[(SQLITE_ONLY, "1")]));
    let out = binary_command(dir.path(), &env)
        .args(["restore", "--from"])
        .arg(&report.set_dir)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("restore refused") && err.contains("is running on"),
        "{err}"
    );
    let safety_copies = std::fs::read_dir(dir.path().join("backups"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("pre-restore-"))
        .count();
    assert_eq!(safety_copies, 0, "nothing was touched");
    assert_eq!(
        shop_token(dir.path(), ENCRYPTION_KEY_B64).await.as_deref(),
        Some("shpat_edge_token")
    );
    let (status, logs) = server.terminate();
    assert!(status.success(), "{logs}");
}

/// After `rotate-key`, a server still configured with the old key would store new connections'
/// tokens under it, beside the rotated ones: it refuses to start and says which key to set.
#[tokio::test]
async fn a_server_on_the_old_key_after_rotate_key_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    save_shop_token(dir.path()).await;
    let mut env = test_vars(dir.path(), &[]);
    env.insert("NEW_TOKEN_ENCRYPTION_KEY".into(), NEW_KEY_B64.into());
    let out = binary_command(dir.path(), &env)
        .arg("rotate-key")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // TOKEN_ENCRYPTION_KEY left at the old value.
    let mut child = binary_command(dir.path(), &env)
        .arg("serve")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server started on a key that decrypts none of the stored tokens");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(!status.success());
    assert!(
        err.contains("TOKEN_ENCRYPTION_KEY does not decrypt the stored tokens"),
        "{err}"
    );
    assert!(!err.contains(ENCRYPTION_KEY_B64) && !err.contains(NEW_KEY_B64));

    // On the rotated key it starts.
    let server = start_binary(
        dir.path(),
        &[("TOKEN_ENCRYPTION_KEY".into(), NEW_KEY_B64.into())],
    );
    let (status, logs) = server.terminate();
    assert!(status.success(), "{logs}");
}

/// On PostgreSQL the database's own backups apply: `backup` and `restore` say so (exit 2).
#[test]
fn backup_and_restore_refuse_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = test_vars(dir.path(), &[]);
    env.insert(
        "DATABASE_URL".into(),
        "postgres://u:secret-password@127.0.0.1:1/db".into(),
    );
    for args in [vec!["backup"], vec!["restore", "--from", "x"]] {
        let out = binary_command(dir.path(), &env)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("pg_dump"), "{err}");
        assert!(!err.contains("secret-password"), "{err}");
    }
}
