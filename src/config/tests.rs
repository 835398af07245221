use super::*;

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn development_starts_with_nothing_and_generates_secrets() {
    let s = Settings::from_vars(&HashMap::new()).unwrap();
    assert_eq!(s.app_env, AppEnv::Development);
    assert_eq!(s.bind_addr.to_string(), "127.0.0.1:5000");
    assert!(s.shopify.is_none() && s.facebook.is_none());
    assert!(matches!(s.storage, StorageSettings::Local { .. }));
    assert!(s.generated_secrets.contains(&"STATE_TOKEN_SECRET"));
    assert!(s.generated_secrets.contains(&"TOKEN_ENCRYPTION_KEY"));
    assert_eq!(s.poll_schedule, "0 0 0 * * *");
    assert_eq!(s.backup_keep, 7);
}

#[test]
fn production_names_every_missing_secret_in_one_error() {
    let err = Settings::from_vars(&vars(&[("APP_ENV", "production")]))
        .err()
        .unwrap();
    let msg = err.to_string();
    for name in [
        "SHOPIFY_API_KEY",
        "SHOPIFY_API_SECRET",
        "FACEBOOK_APP_ID",
        "FACEBOOK_APP_SECRET",
        "STATE_TOKEN_SECRET",
        "TOKEN_ENCRYPTION_KEY",
        "SPACES_BUCKET",
        "SPACES_KEY",
        "SPACES_SECRET",
    ] {
        assert!(msg.contains(name), "{name} not named in {msg}");
    }
}

#[test]
fn malformed_values_are_named() {
    let err = Settings::from_vars(&vars(&[
        ("TOKEN_ENCRYPTION_KEY", "dG9vIHNob3J0"),
        ("BIND_ADDR", "nope"),
        ("POLL_SCHEDULE", "every day"),
        ("BACKUP_KEEP", "0"),
        ("LOG_FORMAT", "xml"),
    ]))
    .err()
    .unwrap();
    let msg = err.to_string();
    for name in [
        "TOKEN_ENCRYPTION_KEY",
        "BIND_ADDR",
        "POLL_SCHEDULE",
        "BACKUP_KEEP",
        "LOG_FORMAT",
    ] {
        assert!(msg.contains(name), "{name} not named in {msg}");
    }
}

#[test]
fn seed_aliases_for_spaces_credentials_work() {
    for (k, s) in [
        ("SPACES_API_KEY", "SPACES_API_SECRET"),
        ("SPACES_ACCESS_KEY", "SPACES_SECRET_KEY"),
        ("SPACES_KEY", "SPACES_SECRET"),
    ] {
        let st = Settings::from_vars(&vars(&[
            (k, "AKID"),
            (s, "shh-secret"),
            ("SPACES_BUCKET", "my-bucket"),
            ("SPACES_REGION", "ams3"),
        ]))
        .unwrap();
        match st.storage {
            StorageSettings::Spaces(sp) => {
                assert_eq!(sp.key, "AKID");
                assert_eq!(sp.secret.expose_secret(), "shh-secret");
                assert_eq!(sp.endpoint.as_str(), "https://ams3.digitaloceanspaces.com/");
            }
            _ => panic!("{k}: expected Spaces"),
        }
    }
}

#[test]
fn derived_addresses_follow_public_base_url() {
    let s = Settings::from_vars(&vars(&[
        ("PUBLIC_BASE_URL", "https://sync.example.com"),
        ("SHOPIFY_API_KEY", "k"),
        ("SHOPIFY_API_SECRET", "s"),
    ]))
    .unwrap();
    let sh = s.shopify.as_ref().unwrap();
    assert_eq!(
        sh.redirect_uri.as_str(),
        "https://sync.example.com/shopify/callback"
    );
    assert_eq!(
        sh.webhook_address.as_str(),
        "https://sync.example.com/shopify/webhook"
    );
    assert!(s.secure_cookies());
}

#[test]
fn describe_masks_secrets() {
    let s = Settings::from_vars(&vars(&[
        ("SHOPIFY_API_KEY", "key123"),
        ("SHOPIFY_API_SECRET", "very-secret-shopify"),
        (
            "STATE_TOKEN_SECRET",
            "state-secret-state-secret-state-secret",
        ),
    ]))
    .unwrap();
    let d = s.describe();
    assert!(d.contains("key123"));
    assert!(!d.contains("very-secret-shopify"));
    assert!(!d.contains("state-secret-state-secret"));
    assert!(d.contains("********"));
}

#[test]
fn facebook_requires_verify_token() {
    let err = Settings::from_vars(&vars(&[
        ("FACEBOOK_APP_ID", "1"),
        ("FACEBOOK_APP_SECRET", "s"),
    ]))
    .err()
    .unwrap();
    assert!(err.to_string().contains("FACEBOOK_VERIFY_TOKEN"));
}

#[test]
fn edge_defaults_trust_the_local_proxy_only() {
    let s = Settings::from_vars(&HashMap::new()).unwrap();
    let e = &s.edge;
    assert_eq!(e.header_timeout, Duration::from_secs(10));
    assert_eq!(e.request_timeout, Duration::from_secs(30));
    assert_eq!(e.callback_timeout, Duration::from_secs(300));
    assert_eq!(e.max_connections, 1024);
    assert_eq!(e.login_burst, 20);
    assert!(e.is_trusted_proxy("127.0.0.1".parse().unwrap()));
    assert!(e.is_trusted_proxy("::1".parse().unwrap()));
    assert!(e.is_trusted_proxy("::ffff:127.0.0.1".parse().unwrap()));
    assert!(!e.is_trusted_proxy("10.0.0.1".parse().unwrap()));
}

#[test]
fn edge_settings_parse_cidrs_and_name_every_bad_value() {
    let s = Settings::from_vars(&vars(&[("TRUSTED_PROXIES", "10.0.0.0/8, fd00::/8")])).unwrap();
    assert!(s.edge.is_trusted_proxy("10.1.2.3".parse().unwrap()));
    assert!(s.edge.is_trusted_proxy("fd00::5".parse().unwrap()));
    assert!(!s.edge.is_trusted_proxy("127.0.0.1".parse().unwrap()));

    let msg = Settings::from_vars(&vars(&[
        ("HTTP_HEADER_TIMEOUT_SECS", "0"),
        ("HTTP_REQUEST_TIMEOUT_SECS", "soon"),
        ("HTTP_CALLBACK_TIMEOUT_SECS", "-5"),
        ("HTTP_MAX_CONNECTIONS", "0"),
        ("LOGIN_RATE_PER_SECOND", "-1"),
        ("LOGIN_BURST", "0"),
        ("TRUSTED_PROXIES", "127.0.0.1,nginx,10.0.0.0/99"),
    ]))
    .err()
    .unwrap()
    .to_string();
    for name in [
        "HTTP_HEADER_TIMEOUT_SECS",
        "HTTP_REQUEST_TIMEOUT_SECS",
        "HTTP_CALLBACK_TIMEOUT_SECS",
        "HTTP_MAX_CONNECTIONS",
        "LOGIN_RATE_PER_SECOND",
        "LOGIN_BURST",
        "TRUSTED_PROXIES",
    ] {
        assert!(msg.contains(name), "{name} not named in {msg}");
    }
    assert!(
        msg.contains("nginx") && msg.contains("10.0.0.0/99"),
        "{msg}"
    );
}

#[test]
fn shopify_webhook_debounce_is_bounded() {
    let shopify = [("SHOPIFY_API_KEY", "k"), ("SHOPIFY_API_SECRET", "s")];
    let s = Settings::from_vars(&vars(&shopify)).unwrap();
    assert_eq!(
        s.shopify.unwrap().webhook_debounce,
        std::time::Duration::from_millis(250)
    );
    for bad in ["70000", "-1", "soon"] {
        let mut v = shopify.to_vec();
        v.push(("SHOPIFY_WEBHOOK_DEBOUNCE_MS", bad));
        let msg = Settings::from_vars(&vars(&v)).err().unwrap().to_string();
        assert!(msg.contains("SHOPIFY_WEBHOOK_DEBOUNCE_MS"), "{bad}: {msg}");
    }
}
