//! S3-compatible backend (DigitalOcean Spaces, AWS S3, MinIO, s3s) through aws-sdk-s3.

use std::time::Duration;

use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    CompletedMultipartUpload, CompletedPart, Delete, ObjectCannedAcl, ObjectIdentifier,
};
use aws_sdk_s3::Client;
use secrecy::ExposeSecret;

use super::{ObjectError, ObjectKey, SHA256_META};
use crate::config::SpacesSettings;

/// Most keys one DeleteObjects request may name.
pub const DELETE_BATCH: usize = 1000;

#[derive(Clone)]
pub struct S3Store {
    client: Client,
    bucket: String,
}

fn io_err(key: &str, e: impl std::fmt::Display) -> ObjectError {
    ObjectError::Io {
        key: key.to_string(),
        reason: e.to_string(),
    }
}

/// The SDK's `Display` for errors is terse ("service error"); the debug chain names the cause
/// (status, code). Neither contains credentials: signing data is not part of errors.
fn describe<E: std::error::Error>(e: &E) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

impl S3Store {
    pub fn new(s: &SpacesSettings) -> S3Store {
        let creds = Credentials::new(
            s.key.clone(),
            s.secret.expose_secret().to_string(),
            None,
            None,
            "salesbot-sync-config",
        );
        let config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(s.region.clone()))
            .endpoint_url(s.endpoint.as_str().trim_end_matches('/'))
            .credentials_provider(creds)
            // Spaces, MinIO and s3s all serve path-style; virtual hosts need DNS per bucket.
            .force_path_style(true)
            // Newer SDKs send CRC checksums by default, which Spaces and others reject.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .operation_timeout(Duration::from_secs(180))
                    .build(),
            )
            .build();
        S3Store {
            client: Client::from_conf(config),
            bucket: s.bucket.clone(),
        }
    }

    pub async fn head_sha256(&self, key: &ObjectKey) -> Result<Option<String>, ObjectError> {
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
        {
            Ok(out) => Ok(Some(
                out.metadata()
                    .and_then(|m| m.get(SHA256_META))
                    .cloned()
                    // An object written by something else has no hash: treat as different.
                    .unwrap_or_default(),
            )),
            Err(e)
                if e.as_service_error().map(|s| s.is_not_found()) == Some(true)
                    || e.raw_response().map(|r| r.status().as_u16()) == Some(404) =>
            {
                Ok(None)
            }
            Err(e) => Err(io_err(key.as_str(), describe(&e))),
        }
    }

    pub async fn put(
        &self,
        key: &ObjectKey,
        bytes: Vec<u8>,
        sha256: &str,
        content_type: &str,
    ) -> Result<(), ObjectError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .body(ByteStream::from(bytes))
            .content_type(content_type)
            .acl(ObjectCannedAcl::Private)
            .metadata(SHA256_META, sha256)
            .send()
            .await
            .map_err(|e| io_err(key.as_str(), describe(&e)))?;
        Ok(())
    }

    /// The body and the stored `sha256` metadata (absent for objects written by others).
    pub async fn get(
        &self,
        key: &ObjectKey,
    ) -> Result<Option<(Vec<u8>, Option<String>)>, ObjectError> {
        match self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
        {
            Ok(out) => {
                let sha = out.metadata().and_then(|m| m.get(SHA256_META)).cloned();
                let data = out
                    .body
                    .collect()
                    .await
                    .map_err(|e| io_err(key.as_str(), e))?;
                Ok(Some((data.into_bytes().to_vec(), sha)))
            }
            Err(e)
                if e.as_service_error().map(|s| s.is_no_such_key()) == Some(true)
                    || e.raw_response().map(|r| r.status().as_u16()) == Some(404) =>
            {
                Ok(None)
            }
            Err(e) => Err(io_err(key.as_str(), describe(&e))),
        }
    }

    pub async fn delete(&self, key: &ObjectKey) -> Result<(), ObjectError> {
        self.client
            .delete_object()
            .bucket(&self.bucket)
            .key(key.as_str())
            .send()
            .await
            .map_err(|e| io_err(key.as_str(), describe(&e)))?;
        Ok(())
    }

    /// Starts a multipart upload carrying the object's attributes; returns its upload id.
    pub async fn create_multipart(
        &self,
        key: &ObjectKey,
        sha256: &str,
    ) -> Result<String, ObjectError> {
        let out = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .content_type("application/json")
            .acl(ObjectCannedAcl::Private)
            .metadata(SHA256_META, sha256)
            .send()
            .await
            .map_err(|e| io_err(key.as_str(), describe(&e)))?;
        out.upload_id()
            .map(str::to_string)
            .ok_or_else(|| io_err(key.as_str(), "the store answered no upload id"))
    }

    /// Uploads part `number` (1-based); returns its ETag.
    pub async fn upload_part(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        number: i32,
        bytes: Vec<u8>,
    ) -> Result<String, ObjectError> {
        let out = self
            .client
            .upload_part()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| io_err(key.as_str(), describe(&e)))?;
        out.e_tag()
            .map(str::to_string)
            .ok_or_else(|| io_err(key.as_str(), "the store answered a part without an ETag"))
    }

    pub async fn complete_multipart(
        &self,
        key: &ObjectKey,
        upload_id: &str,
        parts: Vec<CompletedPart>,
    ) -> Result<(), ObjectError> {
        self.client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| io_err(key.as_str(), describe(&e)))?;
        Ok(())
    }

    pub async fn abort_multipart(
        &self,
        key: &ObjectKey,
        upload_id: &str,
    ) -> Result<(), ObjectError> {
        self.client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key.as_str())
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| io_err(key.as_str(), describe(&e)))?;
        Ok(())
    }

    /// One DeleteObjects request. S3 requires `Content-MD5` on it; newer SDKs send a CRC32
    /// checksum instead, which S3-compatible stores (Spaces, older MinIO, Ceph) refuse with
    /// `MissingContentMD5`, so the request carries the MD5 of its body and no CRC.
    pub async fn delete_many(&self, keys: &[ObjectKey]) -> Result<(), ObjectError> {
        if keys.is_empty() {
            return Ok(());
        }
        let objects = keys
            .iter()
            .map(|k| ObjectIdentifier::builder().key(k.as_str()).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| io_err(keys[0].as_str(), e))?;
        let delete = Delete::builder()
            .set_objects(Some(objects))
            .quiet(true)
            .build()
            .map_err(|e| io_err(keys[0].as_str(), e))?;
        let out = self
            .client
            .delete_objects()
            .bucket(&self.bucket)
            .delete(delete)
            .customize()
            .mutate_request(|req| {
                use base64::Engine;
                use md5::Digest;
                let Some(body) = req.body().bytes() else {
                    return;
                };
                let md5 = base64::engine::general_purpose::STANDARD.encode(md5::Md5::digest(body));
                let headers = req.headers_mut();
                headers.remove("x-amz-checksum-crc32");
                headers.remove("x-amz-sdk-checksum-algorithm");
                headers.insert("content-md5", md5);
            })
            .send()
            .await
            .map_err(|e| io_err(keys[0].as_str(), describe(&e)))?;
        // Quiet mode lists only the keys that could not be deleted.
        if let Some(err) = out.errors().first() {
            return Err(io_err(
                err.key().unwrap_or(keys[0].as_str()),
                format!(
                    "{} of {} objects not deleted: {}",
                    out.errors().len(),
                    keys.len(),
                    err.code().unwrap_or("unknown error")
                ),
            ));
        }
        Ok(())
    }

    pub async fn list(&self, prefix: &str) -> Result<Vec<String>, ObjectError> {
        Ok(self.list_pages(prefix, None).await?.0)
    }

    /// The "folders" directly under `prefix`: common prefixes ending in `/`.
    pub async fn list_folders(&self, prefix: &str) -> Result<Vec<String>, ObjectError> {
        Ok(self.list_pages(prefix, Some("/")).await?.1)
    }

    /// Every page of a listing: the keys, and the common prefixes when `delimiter` is set.
    async fn list_pages(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
    ) -> Result<(Vec<String>, Vec<String>), ObjectError> {
        let (mut keys, mut folders) = (Vec::new(), Vec::new());
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .set_delimiter(delimiter.map(str::to_string))
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| io_err(prefix, describe(&e)))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
            folders.extend(
                page.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(str::to_string)),
            );
        }
        Ok((keys, folders))
    }

    pub async fn check_ready(&self) -> Result<(), ObjectError> {
        self.client
            .head_bucket()
            .bucket(&self.bucket)
            .send()
            .await
            .map_err(|e| ObjectError::Unreachable(describe(&e)))?;
        Ok(())
    }
}
