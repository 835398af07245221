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
    assert!(
        text.contains("POLL_SCHEDULE        = 0 0 0 * * *"),
        "{text}"
    );
}
