//! The S3 sink: the file sink's files (same formats, directories and deterministic
//! names) as objects in any S3-compatible store (`object_store`), under a key prefix.
//!
//! An object appears whole or not at all (a PUT is atomic), and a batch re-read after a
//! crash writes the same keys again, replacing the first attempt's objects: each topic
//! record lands once. Offsets are committed after every object of a batch is stored.

use crate::kafka::security::Secret;
use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt as _, PutPayload};

use super::destination::{Destination, SinkRecord};
use super::file::{FileFormat, FileLayout, FileSettings, Files};

/// The keys of a `type = "s3"` sink: the bucket and how to reach it, and the file
/// sink's layout keys.
#[derive(Clone, Debug, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    #[serde(default)]
    pub bucket: Option<String>,
    /// A key prefix (`flagtally/`).
    #[serde(default)]
    pub prefix: String,
    /// An S3-compatible endpoint (`http://127.0.0.1:8333`); unset for AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    #[serde(default = "default_region")]
    pub region: String,
    /// Credentials (else `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`).
    #[serde(default)]
    pub access_key_id: Option<String>,
    #[serde(default)]
    pub secret_access_key: Option<Secret>,
    /// Path-style requests (self-hosted stores); false: virtual-hosted style.
    #[serde(default = "super::file::yes")]
    pub path_style: bool,
    /// ndjson | csv | avro | parquet.
    #[serde(default = "super::file::default_format")]
    pub format: FileFormat,
    #[serde(default)]
    pub csv_template: Option<String>,
    #[serde(default = "super::file::default_name")]
    pub file_name: String,
    #[serde(default = "super::file::yes")]
    pub partition_by_time: bool,
    #[serde(default)]
    pub codec: String,
}

fn default_region() -> String {
    "us-east-1".to_owned()
}

impl S3Config {
    pub fn layout(&self) -> FileLayout {
        FileLayout {
            format: self.format,
            csv_template: self.csv_template.clone(),
            file_name: self.file_name.clone(),
            partition_by_time: self.partition_by_time,
            codec: self.codec.clone(),
        }
    }

    /// The store's settings; credentials not in the file come from the environment.
    pub fn settings(&self) -> S3Settings {
        let env = |k: &str| std::env::var(k).unwrap_or_default();
        S3Settings {
            bucket: self.bucket.clone().unwrap_or_default(),
            prefix: self.prefix.clone(),
            endpoint: self.endpoint.clone().unwrap_or_default(),
            region: self.region.clone(),
            access_key_id: self
                .access_key_id
                .clone()
                .unwrap_or_else(|| env("AWS_ACCESS_KEY_ID")),
            secret_access_key: self
                .secret_access_key
                .clone()
                .unwrap_or_else(|| Secret::new(env("AWS_SECRET_ACCESS_KEY"))),
            path_style: self.path_style,
        }
    }

    /// The files' settings (their directory: the object keys' root).
    pub fn file_settings(&self) -> FileSettings {
        self.layout().settings(std::path::PathBuf::new())
    }

    pub fn check(&self, at: &str, problems: &mut Vec<String>) {
        if self.bucket.as_deref().is_none_or(str::is_empty) {
            problems.push(format!("{at}.bucket: an s3 sink needs a bucket"));
        }
        self.layout().check(at, problems);
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct S3Settings {
    pub bucket: String,
    /// Keys start with this (`flagtally/` or empty).
    pub prefix: String,
    /// An S3-compatible endpoint (`http://127.0.0.1:8333`); empty for AWS.
    pub endpoint: String,
    pub region: String,
    pub access_key_id: String,
    pub secret_access_key: Secret,
    /// Path-style requests (`endpoint/bucket/key`), as most self-hosted stores want.
    pub path_style: bool,
}

pub struct S3 {
    settings: S3Settings,
    files: Files,
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
}

impl std::fmt::Debug for S3 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3")
            .field("bucket", &self.settings.bucket)
            .field("prefix", &self.settings.prefix)
            .field("endpoint", &self.settings.endpoint)
            .finish_non_exhaustive()
    }
}

impl S3 {
    pub fn new(settings: S3Settings, files: FileSettings) -> anyhow::Result<Self> {
        let mut b = AmazonS3Builder::new()
            .with_bucket_name(&settings.bucket)
            .with_region(&settings.region)
            .with_access_key_id(&settings.access_key_id)
            .with_secret_access_key(settings.secret_access_key.expose())
            .with_virtual_hosted_style_request(!settings.path_style);
        if !settings.endpoint.is_empty() {
            b = b
                .with_endpoint(&settings.endpoint)
                .with_allow_http(settings.endpoint.starts_with("http://"));
        }
        let store = b.build().context("configuring the S3 client")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(Self {
            files: Files::new(files)?,
            settings,
            store: Arc::new(store),
            runtime,
        })
    }

    fn key(&self, relative: &str) -> ObjectPath {
        ObjectPath::from(format!("{}{relative}", self.settings.prefix))
    }
}

impl Destination for S3 {
    fn connect(&mut self) -> anyhow::Result<()> {
        // Bucket, credentials and endpoint are checked by a listing.
        let prefix = self.key("");
        let store = Arc::clone(&self.store);
        self.runtime
            .block_on(async move { store.list_with_delimiter(Some(&prefix)).await })
            .with_context(|| {
                format!(
                    "listing s3://{}/{}",
                    self.settings.bucket, self.settings.prefix
                )
            })?;
        Ok(())
    }

    fn write(
        &mut self,
        batch: &[SinkRecord],
        _positions: &BTreeMap<(String, i32), i64>,
    ) -> anyhow::Result<()> {
        let objects: Vec<(ObjectPath, Vec<u8>)> = self
            .files
            .render(batch)?
            .into_iter()
            .map(|(rel, bytes)| (self.key(&rel), bytes))
            .collect();
        let store = Arc::clone(&self.store);
        let bucket = self.settings.bucket.clone();
        self.runtime.block_on(async move {
            for (key, bytes) in objects {
                store
                    .put(&key, PutPayload::from(bytes))
                    .await
                    .with_context(|| format!("PUT s3://{bucket}/{key}"))?;
            }
            Ok(())
        })
    }
}
