//! Feed indexes: fetched from the mirror, checked against their usign signature (the raw
//! index bytes are signed, like `sha256sums`; reference §2), and kept in the cache under
//! their sha256 — the digest `imagegen.lock` pins — so later runs read them offline:
//!
//! ```text
//! <cache_dir>/feeds/<sha256>/Packages       the index (apk: packages.adb)
//! <cache_dir>/feeds/<sha256>/Packages.gz    as published (opkg; make reads this one)
//! <cache_dir>/feeds/<sha256>/Packages.sig   the signature, when the mirror has one
//! ```
//!
//! A cached index is re-hashed whenever it is read from disk; a parsed one is kept for the
//! rest of the process by its digest (the same bytes always parse the same).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::index::{Package, parse};
use super::{FeedSource, IndexFormat};
use crate::error::{Error, ErrorCode, Result};
use crate::imagebuilder::{Keyring, MirrorClient};

/// The largest index accepted, decompressed: upstream's biggest feed is a few MB.
const MAX_INDEX_BYTES: u64 = 256 << 20;

/// What `imagegen.lock` pins for one feed of a builder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FeedPin {
    /// `openwrt_base`.
    pub name: String,
    /// The index path relative to the mirror root
    /// (`releases/23.05.4/packages/x86_64/base/Packages`).
    pub index: String,
    /// SHA-256 of the index bytes (what the signature covers).
    pub sha256: String,
    /// The usign key that signed the index; `None` when verification was off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_fingerprint: Option<String>,
}

/// An index fetched from the mirror and kept in the cache.
#[derive(Debug, Clone)]
pub struct FeedIndex {
    pub source: FeedSource,
    pub sha256: String,
    pub key_id: Option<String>,
    pub key_fingerprint: Option<String>,
}

impl FeedIndex {
    pub fn pin(&self) -> FeedPin {
        FeedPin {
            name: self.source.name.clone(),
            index: self.source.index_path(),
            sha256: self.sha256.clone(),
            key_id: self.key_id.clone(),
            key_fingerprint: self.key_fingerprint.clone(),
        }
    }
}

/// The cache directory of the index with this digest.
pub fn cached_dir(cache_dir: &Path, sha256: &str) -> PathBuf {
    cache_dir.join("feeds").join(sha256)
}

/// Fetches a feed's index, checks its signature (with `verify`, a missing or wrong one is a
/// `signature_error`) and keeps index, published `.gz` and signature in the cache.
pub fn fetch_index(
    client: &MirrorClient,
    keyring: &Keyring,
    verify: bool,
    source: &FeedSource,
    cache_dir: &Path,
) -> Result<FeedIndex> {
    let (bytes, compressed) = match source.format {
        IndexFormat::Opkg => match client.get_optional(&format!("{}/Packages.gz", source.dir))? {
            Some(compressed) => (
                gunzip(&compressed, &client.url_of(&source.index_path()))?,
                Some(compressed),
            ),
            None => (client.get(&source.index_path())?, None),
        },
        IndexFormat::Apk => {
            let bytes = client.get(&source.index_path())?;
            if bytes.starts_with(b"ADB.") {
                return Err(Error::new(
                    ErrorCode::Precondition,
                    format!(
                        "`{}` is an apk v3 package index; imagegen reads only the stand-in text form of `packages.adb` so far",
                        client.url_of(&source.index_path())
                    ),
                )
                .with_help("docs/feeds.md (\"apk feeds\") says what is supported")
                .with_details(serde_json::json!({ "apk_v3_index": true })));
            }
            (bytes, None)
        }
    };
    let signature_path = format!("{}/{}", source.dir, source.format.signature_name());
    let signature = client.get_optional(&signature_path)?;
    let (key_id, key_fingerprint) = match (verify, &signature) {
        (false, _) => (None, None),
        (true, None) => {
            return Err(Error::new(
                ErrorCode::SignatureError,
                format!(
                    "`{}` has no signature `{}`",
                    client.url_of(&source.index_path()),
                    source.format.signature_name()
                ),
            )
            .with_help("the mirror may be incomplete; use another mirror"));
        }
        (true, Some(signature)) => {
            let text = String::from_utf8_lossy(signature);
            let key = keyring.verify_key(&bytes, &text).map_err(|error| Error {
                message: format!(
                    "`{}`: {}",
                    client.url_of(&source.index_path()),
                    error.message
                ),
                ..error
            })?;
            (Some(key.key_id.to_string()), Some(key.fingerprint()))
        }
    };
    let sha256 = hex::encode(Sha256::digest(&bytes));
    let dir = cached_dir(cache_dir, &sha256);
    crate::fsutil::write_atomically(&dir.join(source.format.index_name()), &bytes)?;
    if let Some(compressed) = &compressed {
        crate::fsutil::write_atomically(&dir.join("Packages.gz"), compressed)?;
    }
    if let Some(signature) = &signature {
        crate::fsutil::write_atomically(&dir.join(source.format.signature_name()), signature)?;
    }
    remember(&sha256, &bytes);
    Ok(FeedIndex {
        source: source.clone(),
        sha256,
        key_id,
        key_fingerprint,
    })
}

/// Whether `error` is [`fetch_index`] meeting a real apk v3 (binary `ADB.`) index, which
/// imagegen cannot read yet: such a builder's feeds are left unpinned, not refused.
pub fn is_apk_v3_index(error: &Error) -> bool {
    error.details["apk_v3_index"] == serde_json::Value::Bool(true)
}

/// Whether the mirror's index differs from the pinned one: `Some(new sha256)` when it does.
/// The signature is fetched first; when it equals the cached signature of the pinned index
/// (Ed25519 signatures are deterministic), the index has not moved and is not downloaded.
pub fn moved(
    client: &MirrorClient,
    keyring: &Keyring,
    verify: bool,
    source: &FeedSource,
    pinned: &str,
    cache_dir: &Path,
) -> Result<Option<String>> {
    let signature_name = source.format.signature_name();
    let cached = std::fs::read(cached_dir(cache_dir, pinned).join(signature_name)).ok();
    if let Some(cached) = cached
        && client.get_optional(&format!("{}/{signature_name}", source.dir))? == Some(cached)
    {
        return Ok(None);
    }
    let fetched = fetch_index(client, keyring, verify, source, cache_dir)?;
    Ok((fetched.sha256 != pinned).then_some(fetched.sha256))
}

/// The parsed index with this digest, from this process's memory or the cache (re-hashed).
/// `None` when the cache does not hold it (or holds something else under that name).
pub(crate) fn load(
    cache_dir: &Path,
    format: IndexFormat,
    sha256: &str,
) -> Option<Arc<Vec<Package>>> {
    if let Some(parsed) = memory().lock().ok()?.get(sha256) {
        return Some(Arc::clone(parsed));
    }
    let bytes = std::fs::read(cached_dir(cache_dir, sha256).join(format.index_name())).ok()?;
    if hex::encode(Sha256::digest(&bytes)) != sha256 {
        return None;
    }
    Some(remember(sha256, &bytes))
}

/// Parsed indexes by digest. Bounded: a run touches a handful of feeds per builder.
fn memory() -> &'static Mutex<HashMap<String, Arc<Vec<Package>>>> {
    static MEMORY: OnceLock<Mutex<HashMap<String, Arc<Vec<Package>>>>> = OnceLock::new();
    MEMORY.get_or_init(|| Mutex::new(HashMap::new()))
}

fn remember(sha256: &str, bytes: &[u8]) -> Arc<Vec<Package>> {
    let parsed = Arc::new(parse(&String::from_utf8_lossy(bytes)));
    if let Ok(mut memory) = memory().lock() {
        if memory.len() >= 256 {
            memory.clear();
        }
        memory.insert(sha256.to_string(), Arc::clone(&parsed));
    }
    parsed
}

fn gunzip(compressed: &[u8], url: &str) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    flate2::read::MultiGzDecoder::new(compressed)
        .take(MAX_INDEX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|error| {
            Error::new(
                ErrorCode::DownloadError,
                format!("`{url}.gz` does not decompress: {error}"),
            )
        })?;
    if bytes.len() as u64 > MAX_INDEX_BYTES {
        return Err(Error::new(
            ErrorCode::DownloadError,
            format!("`{url}` is larger than {} MiB", MAX_INDEX_BYTES >> 20),
        ));
    }
    Ok(bytes)
}
