//! Backup targets: where a backupstore lives, reached through `object_store`.
//!
//! `s3://bucket@region/path` (any S3-compatible server: endpoint, credentials and region
//! from the AWS environment variables or [`TargetOptions`]), `file:///path` (a local
//! directory or an NFS mount), and `nfs://host:/path` (mounted here when the host can).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, RetryConfig};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::TargetError;
use crate::secret::Secret;

/// How to reach an S3 target when the URL and environment do not say it all.
#[derive(Debug, Clone, Default)]
pub struct TargetOptions {
    /// S3 endpoint, e.g. `http://127.0.0.1:9000` (default: `AWS_ENDPOINT_URL`, then
    /// `AWS_ENDPOINTS`, then AWS itself).
    pub endpoint: Option<String>,
    /// Access key (default: `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// Secret key (default: `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<Secret>,
    /// Create a `file://` target's directory when it is missing (taking a backup);
    /// otherwise a missing directory is an error, so a typo or an unmounted NFS mount
    /// point never reads as an empty store.
    pub create_directory: bool,
}

/// An opened backup target: an object store and the prefix the backupstore lives under.
#[derive(Debug, Clone)]
pub struct Target {
    store: Arc<dyn ObjectStore>,
    root: Path,
    url: String,
    /// Keeps an `nfs://` target mounted while any clone of the target lives.
    _mount: Option<Arc<NfsMount>>,
}

impl Target {
    /// Opens `url`. Nothing is contacted yet; the first operation reports an unreachable
    /// endpoint or refused credentials.
    pub fn open(url: &str, options: &TargetOptions) -> Result<Target, TargetError> {
        let parsed = parse_url(url)?;
        match parsed.scheme() {
            "s3" => open_s3(url, &parsed, options),
            "file" => {
                if !url.starts_with("file:///") {
                    return Err(malformed(url, THREE_SLASHES));
                }
                open_directory(url, PathBuf::from(parsed.path()), None, options)
            }
            "nfs" => {
                let mount = NfsMount::mount(url, &parsed)?;
                let dir = mount.dir.clone();
                open_directory(url, dir, Some(Arc::new(mount)), options)
            }
            other => Err(unknown_scheme(url, other)),
        }
    }

    /// Checks a target URL's form without contacting, creating or mounting anything.
    pub fn check_url(url: &str) -> Result<(), TargetError> {
        let parsed = parse_url(url)?;
        match parsed.scheme() {
            "s3" if !parsed.username().is_empty()
                || parsed.host_str().is_some_and(|h| !h.is_empty()) =>
            {
                Ok(())
            }
            "s3" => Err(malformed(url, NO_BUCKET)),
            "file" if url.starts_with("file:///") => Ok(()),
            "file" => Err(malformed(url, THREE_SLASHES)),
            "nfs" if parsed.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
            "nfs" => Err(malformed(url, NO_HOST)),
            other => Err(unknown_scheme(url, other)),
        }
    }

    /// The URL the target was opened from.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `relative` under the target's prefix.
    pub(crate) fn path(&self, relative: &str) -> Path {
        let mut path = self.root.clone();
        for part in relative.split('/').filter(|p| !p.is_empty()) {
            path = path.join(part);
        }
        path
    }

    /// `path` relative to the target's prefix (as listed objects come back).
    pub(crate) fn relative(&self, path: &Path) -> String {
        match path.prefix_match(&self.root) {
            Some(parts) => parts
                .map(|p| p.as_ref().to_string())
                .collect::<Vec<_>>()
                .join("/"),
            None => path.to_string(),
        }
    }

    /// Stores `data` at `relative` (atomically: readers see all of it or nothing).
    pub(crate) async fn put(&self, relative: &str, data: Bytes) -> Result<(), TargetError> {
        let path = self.path(relative);
        match self.store.put(&path, data.into()).await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.object_error("writing", path, e)),
        }
    }

    fn object_error(&self, op: &'static str, path: Path, e: object_store::Error) -> TargetError {
        TargetError::Object {
            url: self.url.clone(),
            op,
            path,
            source: Box::new(e),
        }
    }

    /// Stores `value` as JSON at `relative`.
    pub(crate) async fn put_json<T: Serialize>(
        &self,
        relative: &str,
        value: &T,
    ) -> Result<(), TargetError> {
        let data = serde_json::to_vec_pretty(value).map_err(|source| TargetError::Encode {
            url: self.url.clone(),
            path: self.path(relative),
            source,
        })?;
        self.put(relative, data.into()).await
    }

    /// Stores `value` as JSON at `relative` and returns the object's metadata as the
    /// store now reports it (its modification time is the store's clock).
    pub(crate) async fn put_json_and_stat<T: Serialize>(
        &self,
        relative: &str,
        value: &T,
    ) -> Result<ObjectMeta, TargetError> {
        self.put_json(relative, value).await?;
        self.head(relative)
            .await?
            .ok_or_else(|| TargetError::Vanished {
                url: self.url.clone(),
                path: self.path(relative),
            })
    }

    /// The object at `relative`, or `None` when there is none.
    pub(crate) async fn get(&self, relative: &str) -> Result<Option<Bytes>, TargetError> {
        let path = self.path(relative);
        match self.store.get(&path).await {
            Ok(result) => match result.bytes().await {
                Ok(bytes) => Ok(Some(bytes)),
                Err(e) => Err(self.object_error("reading", path, e)),
            },
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.object_error("reading", path, e)),
        }
    }

    /// The JSON object at `relative`, or `None` when there is none.
    pub(crate) async fn get_json<T: DeserializeOwned>(
        &self,
        relative: &str,
    ) -> Result<Option<T>, TargetError> {
        let Some(data) = self.get(relative).await? else {
            return Ok(None);
        };
        let value = serde_json::from_slice(&data).map_err(|source| TargetError::CorruptJson {
            url: self.url.clone(),
            path: self.path(relative),
            source,
        })?;
        Ok(Some(value))
    }

    /// Metadata of the object at `relative`, or `None` when there is none.
    pub(crate) async fn head(&self, relative: &str) -> Result<Option<ObjectMeta>, TargetError> {
        let path = self.path(relative);
        match self.store.head(&path).await {
            Ok(meta) => Ok(Some(meta)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.object_error("looking up", path, e)),
        }
    }

    /// Removes the object at `relative`; removing a missing object succeeds.
    pub(crate) async fn delete(&self, relative: &str) -> Result<(), TargetError> {
        let path = self.path(relative);
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.object_error("removing", path, e)),
        }
    }

    /// Every object under `relative`, recursively.
    pub(crate) async fn list(&self, relative: &str) -> Result<Vec<ObjectMeta>, TargetError> {
        let prefix = self.path(relative);
        match self.store.list(Some(&prefix)).try_collect().await {
            Ok(listed) => Ok(listed),
            Err(e) => Err(self.object_error("listing", prefix, e)),
        }
    }

    /// The names of the "directories" directly under `relative`.
    pub(crate) async fn list_dirs(&self, relative: &str) -> Result<Vec<String>, TargetError> {
        let prefix = self.path(relative);
        let listed = match self.store.list_with_delimiter(Some(&prefix)).await {
            Ok(listed) => listed,
            Err(e) => return Err(self.object_error("listing", prefix, e)),
        };
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }
}

/// Timeouts and retries for S3: a refused connection fails within seconds; a server that
/// accepts but never answers, after the request timeout (30 s) and retries.
fn s3_client_options() -> (ClientOptions, RetryConfig) {
    let client = ClientOptions::new()
        .with_allow_http(true)
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(30));
    let retry = RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(15),
        ..RetryConfig::default()
    };
    (client, retry)
}

const THREE_SLASHES: &str = "write file:///absolute/path (three slashes)";
const NO_BUCKET: &str = "no bucket; write s3://bucket@region/path";
const NO_HOST: &str = "no host; write nfs://host:/path";

fn parse_url(url: &str) -> Result<url::Url, TargetError> {
    url::Url::parse(url).map_err(|source| TargetError::NotAUrl {
        url: url.to_string(),
        source,
    })
}

fn malformed(url: &str, problem: &'static str) -> TargetError {
    TargetError::Malformed {
        url: url.to_string(),
        problem,
    }
}

fn unknown_scheme(url: &str, scheme: &str) -> TargetError {
    TargetError::UnknownScheme {
        url: url.to_string(),
        scheme: scheme.to_string(),
    }
}

fn open_s3(url: &str, parsed: &url::Url, options: &TargetOptions) -> Result<Target, TargetError> {
    // s3://bucket@region/path: the bucket sits where a URL keeps its user name.
    let (bucket, region) = if parsed.username().is_empty() {
        (parsed.host_str().unwrap_or_default().to_string(), None)
    } else {
        (
            parsed.username().to_string(),
            parsed.host_str().map(str::to_string),
        )
    };
    if bucket.is_empty() {
        return Err(malformed(url, NO_BUCKET));
    }
    let mut builder = AmazonS3Builder::from_env().with_bucket_name(&bucket);
    if let Some(region) = region.filter(|r| !r.is_empty()) {
        builder = builder.with_region(region);
    } else if std::env::var_os("AWS_REGION").is_none()
        && std::env::var_os("AWS_DEFAULT_REGION").is_none()
    {
        builder = builder.with_region("us-east-1");
    }
    let endpoint = options
        .endpoint
        .clone()
        .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok())
        .or_else(|| std::env::var("AWS_ENDPOINTS").ok());
    let custom_endpoint = endpoint.as_ref().is_some_and(|e| !e.is_empty());
    if let Some(endpoint) = endpoint.filter(|e| !e.is_empty()) {
        // Longhorn's AWS_ENDPOINTS may list several; the first one serves.
        let first = endpoint.split(',').next().unwrap_or_default().trim();
        check_endpoint(url, first)?;
        builder = builder.with_endpoint(first);
    }
    // Off AWS there is no instance metadata service to fall back on: say what is missing
    // instead of failing on a request to 169.254.169.254.
    let has_key = options.access_key_id.is_some() || env_set("AWS_ACCESS_KEY_ID");
    let has_secret = options.secret_access_key.is_some() || env_set("AWS_SECRET_ACCESS_KEY");
    if custom_endpoint && !(has_key && has_secret) {
        return Err(TargetError::NoCredentials {
            url: url.to_string(),
        });
    }
    if let Some(key) = &options.access_key_id {
        builder = builder.with_access_key_id(key);
    }
    if let Some(secret) = &options.secret_access_key {
        builder = builder.with_secret_access_key(secret.expose());
    }
    let (client, retry) = s3_client_options();
    let store = builder
        .with_virtual_hosted_style_request(false)
        .with_client_options(client)
        .with_retry(retry)
        .build()
        .map_err(|e| TargetError::S3 {
            url: url.to_string(),
            source: Box::new(e),
        })?;
    let root = Path::parse(parsed.path().trim_matches('/')).map_err(|e| TargetError::BadPath {
        url: url.to_string(),
        source: Box::new(e),
    })?;
    Ok(Target {
        store: Arc::new(store),
        root,
        url: url.to_string(),
        _mount: None,
    })
}

fn env_set(name: &str) -> bool {
    std::env::var_os(name).is_some_and(|v| !v.is_empty())
}

/// Refuses an endpoint that is not an http(s) URL with a host (object_store would panic
/// on some of them).
fn check_endpoint(url: &str, endpoint: &str) -> Result<(), TargetError> {
    let parsed = url::Url::parse(endpoint).map_err(|error| TargetError::EndpointNotAUrl {
        url: url.to_string(),
        endpoint: endpoint.to_string(),
        error,
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none_or(str::is_empty) {
        return Err(TargetError::EndpointScheme {
            url: url.to_string(),
            endpoint: endpoint.to_string(),
        });
    }
    Ok(())
}

fn create_directory(url: &str, dir: &std::path::Path) -> Result<(), TargetError> {
    std::fs::create_dir_all(dir).map_err(|source| TargetError::CreateDirectory {
        url: url.to_string(),
        dir: dir.to_path_buf(),
        source,
    })
}

fn open_directory(
    url: &str,
    dir: PathBuf,
    mount: Option<Arc<NfsMount>>,
    options: &TargetOptions,
) -> Result<Target, TargetError> {
    if options.create_directory {
        create_directory(url, &dir)?;
    } else if !dir.is_dir() {
        return Err(TargetError::MissingDirectory {
            url: url.to_string(),
            dir,
        });
    }
    let store = match LocalFileSystem::new_with_prefix(&dir) {
        Ok(store) => store.with_automatic_cleanup(true),
        Err(e) => {
            return Err(TargetError::OpenDirectory {
                url: url.to_string(),
                dir,
                source: Box::new(e),
            });
        }
    };
    Ok(Target {
        store: Arc::new(store),
        root: Path::default(),
        url: url.to_string(),
        _mount: mount,
    })
}

/// An NFS export mounted on a private directory for as long as the target is open.
#[derive(Debug)]
struct NfsMount {
    dir: PathBuf,
}

impl NfsMount {
    fn mount(url: &str, parsed: &url::Url) -> Result<NfsMount, TargetError> {
        let host = parsed
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| malformed(url, NO_HOST))?;
        let export = format!("{host}:{}", parsed.path());
        let dir = std::env::temp_dir().join(format!(
            "shorthorn-nfs-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        create_directory(url, &dir)?;
        let output = std::process::Command::new("mount")
            .args(["-t", "nfs", "-o", "soft,timeo=100,retrans=2"])
            .arg(&export)
            .arg(&dir)
            .output();
        let failure = match output {
            Ok(output) if output.status.success() => return Ok(NfsMount { dir }),
            Ok(output) => String::from_utf8_lossy(&output.stderr).trim().to_string(),
            Err(e) => e.to_string(),
        };
        let _ = std::fs::remove_dir(&dir);
        Err(TargetError::NfsMount {
            url: url.to_string(),
            export,
            failure,
        })
    }
}

impl Drop for NfsMount {
    fn drop(&mut self) {
        let unmounted = std::process::Command::new("umount").arg(&self.dir).status();
        if unmounted.is_ok_and(|s| s.success()) {
            let _ = std::fs::remove_dir(&self.dir);
        } else {
            tracing::warn!(dir = %self.dir.display(), "could not unmount the NFS backup target");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Chain;

    #[test]
    fn urls_are_checked_before_anything_is_contacted() {
        let options = TargetOptions::default();
        for (url, expected) in [
            ("not a url", "not a URL"),
            ("ftp://host/x", "unknown scheme"),
            ("s3:///path", "no bucket"),
            ("file://host/path", "three slashes"),
            ("file:relative/path", "three slashes"),
            ("file:///surely/not/here", "does not exist"),
        ] {
            let err = Target::open(url, &options).unwrap_err();
            let message = Chain(&err).to_string();
            assert!(message.contains(expected), "{url}: {message}");
        }
    }

    #[test]
    fn s3_urls_name_bucket_region_and_prefix() {
        let options = TargetOptions {
            endpoint: Some("http://127.0.0.1:1".into()),
            access_key_id: Some("key".into()),
            secret_access_key: Some("secret".into()),
            ..TargetOptions::default()
        };
        let target = Target::open("s3://bucket@eu-west-1/some/prefix", &options).unwrap();
        assert_eq!(target.path("volumes/v").as_ref(), "some/prefix/volumes/v");
        assert_eq!(target.relative(&target.path("a/b")), "a/b");
    }
}
