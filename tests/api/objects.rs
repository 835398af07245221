//! The same object-store cases against the local folder and the embedded S3 server.

use std::sync::atomic::Ordering;

use salesbot_sync::config::{Settings, StorageSettings};
use salesbot_sync::crypto::sha256_hex;
use salesbot_sync::ids::{MerchantId, PageId, Psid, ShopDomain};
use salesbot_sync::objects::keys;
use salesbot_sync::objects::{ObjectStore, PutOutcome, MULTIPART_THRESHOLD};
use serde_json::json;

use crate::helpers::*;

fn local_store(dir: &std::path::Path) -> ObjectStore {
    ObjectStore::from_settings(&StorageSettings::Local {
        dir: dir.join("objects"),
    })
    .unwrap()
}

fn s3_store(s3: &S3Server) -> ObjectStore {
    let vars = s3.vars().into_iter().collect();
    let settings = Settings::from_vars(&vars).unwrap();
    ObjectStore::from_settings(&settings.storage).unwrap()
}

/// The behaviour every backend must have.
async fn common_cases(store: &ObjectStore) {
    let m = MerchantId::random();
    let shop = ShopDomain::parse("acme.myshopify.com").unwrap();
    let key = keys::shop_products(&m, &shop);

    assert_eq!(store.head_sha256(&key).await.unwrap(), None);
    let v1 = json!({"products": [{"id": 1, "title": "Mug", "price": "9.00"}]});
    assert_eq!(
        store.put_json_if_changed(&key, &v1).await.unwrap(),
        PutOutcome::Written
    );
    // Same data with keys in another order: canonical bytes are equal, nothing written.
    let v1_reordered = json!({"products": [{"price": "9.00", "title": "Mug", "id": 1}]});
    assert_eq!(
        store
            .put_json_if_changed(&key, &v1_reordered)
            .await
            .unwrap(),
        PutOutcome::Unchanged
    );
    let stored = store.get(&key).await.unwrap().unwrap();
    assert_eq!(
        store.head_sha256(&key).await.unwrap().as_deref(),
        Some(sha256_hex(&stored).as_str())
    );
    let v2 = json!({"products": [{"id": 1, "title": "Mug", "price": "10.00"}]});
    assert_eq!(
        store.put_json_if_changed(&key, &v2).await.unwrap(),
        PutOutcome::Written
    );
    let back: serde_json::Value =
        serde_json::from_slice(&store.get(&key).await.unwrap().unwrap()).unwrap();
    assert_eq!(back, v2);

    // Listing and deleting a prefix touches only that prefix.
    let page = PageId::parse("100").unwrap();
    let other = MerchantId::random();
    store
        .put_json_if_changed(&keys::page_metadata(&m, &page), &json!({"id": "100"}))
        .await
        .unwrap();
    store
        .put_json_if_changed(&keys::shop_metadata(&other, &shop), &json!({"shop": {}}))
        .await
        .unwrap();
    let listed = store.list(&keys::merchant_prefix(&m)).await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    // The merchants with objects, one per folder under `users/`, found without listing
    // their objects.
    let mut merchants = store.merchants().await.unwrap();
    merchants.sort();
    let mut expected = vec![m, other];
    expected.sort();
    assert_eq!(merchants, expected);
    assert_eq!(
        store
            .delete_prefix(&keys::shop_prefix(&m, &shop))
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.get(&key).await.unwrap(), None);
    assert!(store
        .get(&keys::page_metadata(&m, &page))
        .await
        .unwrap()
        .is_some());
    assert!(store
        .get(&keys::shop_metadata(&other, &shop))
        .await
        .unwrap()
        .is_some());

    // Concurrent read-modify-writes of one object lose nothing.
    let conv = keys::conversation(&m, &page, &Psid::parse("5").unwrap());
    let mut set = tokio::task::JoinSet::new();
    for i in 0..40 {
        let store = store.clone();
        let conv = conv.clone();
        set.spawn(async move {
            store
                .update_json(&conv, move |cur| {
                    let mut items = cur.and_then(|v| v.as_array().cloned()).unwrap_or_default();
                    items.push(json!(i));
                    serde_json::Value::Array(items)
                })
                .await
                .unwrap()
        });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
    let items: Vec<i64> =
        serde_json::from_slice(&store.get(&conv).await.unwrap().unwrap()).unwrap();
    let mut sorted = items.clone();
    sorted.sort();
    assert_eq!(sorted, (0..40).collect::<Vec<_>>());

    // Streamed uploads: small (one PUT) and over the multipart threshold (parts sent two at
    // a time, finishing in any order), written in uneven pieces; the object appears whole,
    // with its hash, only at the end.
    for size in [1_000, MULTIPART_THRESHOLD * 3 + 12_345] {
        let key = keys::shop_metadata(&m, &shop);
        let bytes: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
        let sha = sha256_hex(&bytes);
        let mut upload = store.begin_upload(&key, &sha).await.unwrap();
        for piece in bytes.chunks(777_777) {
            upload.write(store, piece).await.unwrap();
            if size > MULTIPART_THRESHOLD {
                assert_ne!(store.head_sha256(&key).await.unwrap(), Some(sha.clone()));
            }
        }
        assert_eq!(upload.finish(store).await.unwrap(), size);
        assert!(
            store.get(&key).await.unwrap().unwrap() == bytes,
            "{size} bytes"
        );
        assert_eq!(store.head_sha256(&key).await.unwrap(), Some(sha));
    }
    store.check_ready().await.unwrap();
}

#[tokio::test]
async fn local_backend_cases() {
    let dir = tempfile::tempdir().unwrap();
    let store = local_store(dir.path());
    common_cases(&store).await;
    // No temp files are left behind by atomic writes.
    let leftovers: Vec<_> = walk(&dir.path().join("objects"))
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn s3_backend_cases() {
    let s3 = start_s3().await;
    let store = s3_store(&s3);
    common_cases(&store).await;
}

#[tokio::test]
async fn s3_change_detection_uses_head_not_get_and_sets_object_attributes() {
    let s3 = start_s3().await;
    let store = s3_store(&s3);
    let m = MerchantId::random();
    let key = keys::shop_metadata(&m, &ShopDomain::parse("acme.myshopify.com").unwrap());
    let v = json!({"shop": {"name": "Acme"}, "collections": [], "discounts": []});
    store.put_json_if_changed(&key, &v).await.unwrap();
    let (gets, puts) = (s3.gets(), s3.puts());
    for _ in 0..5 {
        assert_eq!(
            store.put_json_if_changed(&key, &v).await.unwrap(),
            PutOutcome::Unchanged
        );
    }
    assert_eq!(
        s3.gets(),
        gets,
        "change detection must not download the body"
    );
    assert_eq!(s3.puts(), puts, "unchanged data must not be uploaded");
    assert!(s3.counters.head.load(Ordering::SeqCst) >= 5);

    // Check what the bucket holds with an independent client.
    let conf = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .endpoint_url(&s3.endpoint)
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            S3_KEY, S3_SECRET, None, None, "t",
        ))
        .force_path_style(true)
        .build();
    let client = aws_sdk_s3::Client::from_conf(conf);
    let head = client
        .head_object()
        .bucket(S3_BUCKET)
        .key(key.as_str())
        .send()
        .await
        .unwrap();
    assert_eq!(head.content_type(), Some("application/json"));
    let body = std::fs::read(s3.object_path(key.as_str())).unwrap();
    assert_eq!(
        head.metadata().unwrap().get("sha256").unwrap(),
        &sha256_hex(&body)
    );
    // An object changed behind our back (no or other hash) is rewritten.
    client
        .put_object()
        .bucket(S3_BUCKET)
        .key(key.as_str())
        .body(aws_sdk_s3::primitives::ByteStream::from_static(b"{}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        store.put_json_if_changed(&key, &v).await.unwrap(),
        PutOutcome::Written
    );
}

#[tokio::test]
async fn s3_errors_are_reported_not_panicked() {
    let s3 = start_s3().await;
    let mut vars: std::collections::HashMap<String, String> = s3.vars().into_iter().collect();
    vars.insert("SPACES_SECRET".into(), "wrong-secret".into());
    let store = ObjectStore::from_settings(&Settings::from_vars(&vars).unwrap().storage).unwrap();
    let key = keys::merchant_prefix(&MerchantId::random());
    let key = store.list(&key).await;
    assert!(key.is_err(), "a bad signature must surface as an error");
    assert!(store.check_ready().await.is_err());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}
