//! Build keys: one profile's resolved inputs → a canonical serialization → a blake3 key, and
//! the human explanation of what changed between two input sets, produced by the same walk
//! over the same fields so the two can never drift apart. No I/O here.
//!
//! Inputs are everything that changes the image (DESIGN §4): the pinned Image Builder
//! archive sha256, the Image Builder profile, the normalized package set, the overlay tree
//! hash, the options that change output, the pinned package feed indexes (docs/feeds.md), and
//! [`ACTION_SCHEMA_VERSION`]. Force flags and output locations (`bin_dir`) are deliberately
//! not inputs. An image is a function of its key alone: the provenance file it carries holds
//! only these inputs ([`BuildInputs::provenance`]), never the profile, device or fleet commit
//! that asked for it (docs/decisions.md).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::triple::Triple;

/// Bump when the meaning of a build changes (how inputs map to `make image`), so every
/// recorded build is rebuilt once instead of being wrongly reused.
///
/// 1: first release. 2: the provenance file holds only key inputs (schema 1 images named
/// the profile, device and fleet commit, so one key could give different bytes); the
/// initramfs image is an input.
pub const ACTION_SCHEMA_VERSION: u32 = 2;

/// The version of the provenance file's layout (`/etc/imagegen/build.json`).
pub const PROVENANCE_FORMAT: u32 = 1;

/// The domain-separation header hashed in front of the fields.
const KEY_HEADER: &str = "imagegen-build-key-v1\n";

/// A build key: blake3 of the canonical inputs, lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BuildKey(pub String);

impl fmt::Display for BuildKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which Image Builder a build uses. `archive_sha256` is `None` until the lock pins it;
/// then the key is "known after fetch".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BuilderPin {
    #[serde(flatten)]
    pub triple: Triple,
    pub archive_sha256: Option<String>,
    pub version_code: Option<String>,
}

/// One overlay entry as recorded for explanations: kind, mode, owner and content digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct OverlayFact {
    pub kind: String,
    pub mode: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    pub digest: String,
}

/// The overlay as a key input: its tree hash, plus per-path facts so an explanation can
/// name the files that changed. Only `tree_hash` enters the key; it covers the facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
pub struct OverlayInputs {
    pub tree_hash: String,
    pub entries: BTreeMap<String, OverlayFact>,
}

/// Image Builder options that change the output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default, ToSchema)]
pub struct ImageOptions {
    pub extra_image_name: Option<String>,
    pub disabled_services: Vec<String>,
    pub rootfs_partsize: Option<u64>,
    pub add_local_key: bool,
    pub filesystem: Option<String>,
    pub provenance: bool,
    /// The release's prebuilt initramfs image of the device, fetched as an artifact of the
    /// build (`build_defaults.initramfs`), pinned by the sha256 the pinned `profiles.json`
    /// lists for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initramfs: Option<InitramfsImage>,
}

/// One upstream initramfs image: its file name in the target directory and its sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InitramfsImage {
    pub name: String,
    pub sha256: String,
}

/// A package feed a build installs from: its name and the sha256 of the index the lock pins.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub struct FeedDigest {
    pub name: String,
    pub sha256: String,
}

/// Everything that determines one image, normalized.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BuildInputs {
    pub schema: u32,
    pub builder: BuilderPin,
    pub imagebuilder_profile: String,
    /// Packages to add: sorted, de-duplicated.
    pub packages: Vec<String>,
    /// Packages to remove: sorted, de-duplicated.
    pub packages_remove: Vec<String>,
    pub overlay: OverlayInputs,
    pub options: ImageOptions,
    /// Every feed of the Image Builder with its pinned index (any of them can change what
    /// opkg picks); empty when the lock pins no feeds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feeds: Vec<FeedDigest>,
}

/// Sorts and de-duplicates a package (or service) list, dropping blank names.
pub fn normalize_names<'a>(names: impl IntoIterator<Item = &'a String>) -> Vec<String> {
    let mut names: Vec<String> = names
        .into_iter()
        .map(|name| name.trim().to_string())
        .filter(|name| !name.is_empty())
        .collect();
    names.sort();
    names.dedup();
    names
}

/// One input field as it enters the key: a stable name and a canonical JSON value.
struct KeyField {
    name: &'static str,
    value: Value,
}

/// Why a build is (re)built: one changed field with its old and new value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Reason {
    /// The input field (`builder`, `packages`, `overlay`, `options.extra_image_name`, ...).
    pub field: String,
    /// One human line: "packages: +collectd -luci".
    pub text: String,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub old: Value,
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub new: Value,
}

impl BuildInputs {
    /// The fields that make the key, in a fixed order. The explanation walks the same list.
    fn fields(&self) -> Vec<KeyField> {
        let options = &self.options;
        vec![
            field("schema", json!(self.schema)),
            field(
                "builder",
                json!({
                    "release": self.builder.triple.release,
                    "target": self.builder.triple.target,
                    "subtarget": self.builder.triple.subtarget,
                    "archive_sha256": self.builder.archive_sha256,
                }),
            ),
            field("imagebuilder_profile", json!(self.imagebuilder_profile)),
            field("packages", json!(self.packages)),
            field("packages_remove", json!(self.packages_remove)),
            field("overlay", json!(self.overlay.tree_hash)),
            field("options.extra_image_name", json!(options.extra_image_name)),
            field(
                "options.disabled_services",
                json!(options.disabled_services),
            ),
            field("options.rootfs_partsize", json!(options.rootfs_partsize)),
            field("options.add_local_key", json!(options.add_local_key)),
            field("options.filesystem", json!(options.filesystem)),
            field("options.provenance", json!(options.provenance)),
            field("options.initramfs", json!(options.initramfs)),
            field(
                "feeds",
                Value::Object(
                    self.feeds
                        .iter()
                        .map(|feed| (feed.name.clone(), json!(feed.sha256)))
                        .collect(),
                ),
            ),
        ]
    }

    /// The fields that are hashed: [`Self::fields`] less an empty `feeds` (feeds came after
    /// keys: without pinned feeds a key, and the provenance an image carries, stay what they
    /// always were).
    fn hashed_fields(&self) -> Vec<KeyField> {
        let mut fields = self.fields();
        fields.retain(|field| {
            !(field.name == "feeds" && field.value.as_object().is_some_and(|f| f.is_empty()))
        });
        fields
    }

    /// What `/etc/imagegen/build.json` holds: the key and every key input, from the same
    /// walk as the key, so two images with one key carry byte-identical provenance.
    pub fn provenance(&self, key: &BuildKey) -> Value {
        let inputs: serde_json::Map<String, Value> = self
            .hashed_fields()
            .into_iter()
            .map(|KeyField { name, value }| (name.to_string(), value))
            .collect();
        json!({
            "format": PROVENANCE_FORMAT,
            "build_key": key.0,
            "key_inputs": inputs,
        })
    }

    /// The canonical serialization: a header, then `name=<canonical JSON>` lines.
    /// serde_json maps are sorted by key, so the JSON of a value is canonical.
    pub fn canonical(&self) -> String {
        let mut text = String::from(KEY_HEADER);
        for KeyField { name, value } in self.hashed_fields() {
            text.push_str(name);
            text.push('=');
            text.push_str(&value.to_string());
            text.push('\n');
        }
        text
    }

    /// The build key, or `None` while the Image Builder archive is not pinned.
    pub fn key(&self) -> Option<BuildKey> {
        self.builder.archive_sha256.as_ref()?;
        Some(BuildKey(
            blake3::hash(self.canonical().as_bytes())
                .to_hex()
                .to_string(),
        ))
    }

    /// Why `self` differs from `old`: one reason per changed key field, in key order.
    pub fn explain_against(&self, old: &BuildInputs) -> Vec<Reason> {
        let old_fields = old.fields();
        self.fields()
            .into_iter()
            .zip(old_fields)
            .filter(|(new, old)| new.value != old.value)
            .map(|(new, old_field)| describe(new.name, old, self, old_field.value, new.value))
            .collect()
    }

    /// The `PACKAGES=` value for `make image`: additions, then `-name` removals.
    pub fn make_packages(&self) -> String {
        let removals = self.packages_remove.iter().map(|name| format!("-{name}"));
        self.packages
            .iter()
            .cloned()
            .chain(removals)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

fn field(name: &'static str, value: Value) -> KeyField {
    KeyField { name, value }
}

fn describe(
    name: &str,
    old: &BuildInputs,
    new: &BuildInputs,
    old_value: Value,
    new_value: Value,
) -> Reason {
    let text = match name {
        "schema" => format!("imagegen build schema {} → {}", old.schema, new.schema),
        "builder" => describe_builder(&old.builder, &new.builder),
        "imagebuilder_profile" => format!(
            "Image Builder profile: {} → {}",
            old.imagebuilder_profile, new.imagebuilder_profile
        ),
        "packages" => format!("packages: {}", list_diff(&old.packages, &new.packages)),
        "packages_remove" => format!(
            "packages removed: {}",
            list_diff(&old.packages_remove, &new.packages_remove)
        ),
        "overlay" => describe_overlay(&old.overlay, &new.overlay),
        "options.initramfs" => format!(
            "initramfs image: {} → {}",
            initramfs_text(&old.options.initramfs),
            initramfs_text(&new.options.initramfs)
        ),
        "feeds" => describe_feeds(&old.feeds, &new.feeds),
        "options.disabled_services" => format!(
            "disabled services: {}",
            list_diff(
                &old.options.disabled_services,
                &new.options.disabled_services
            )
        ),
        _ => format!(
            "{}: {} → {}",
            name.trim_start_matches("options."),
            show_value(&old_value),
            show_value(&new_value)
        ),
    };
    Reason {
        field: name.to_string(),
        text,
        old: old_value,
        new: new_value,
    }
}

fn initramfs_text(image: &Option<InitramfsImage>) -> String {
    match image {
        Some(image) => format!("{} ({})", image.name, short_hash(&image.sha256)),
        None => "none".to_string(),
    }
}

fn describe_builder(old: &BuilderPin, new: &BuilderPin) -> String {
    if old.triple != new.triple {
        return format!("Image Builder {} → {}", old.triple, new.triple);
    }
    match (&old.archive_sha256, &new.archive_sha256) {
        (_, None) => format!(
            "Image Builder {} not pinned in imagegen.lock (key known after fetch)",
            new.triple
        ),
        (Some(old_sha), Some(new_sha)) => format!(
            "Image Builder {} re-spun (sha256 {} → {})",
            new.triple,
            short_hash(old_sha),
            short_hash(new_sha)
        ),
        (None, Some(new_sha)) => format!(
            "Image Builder {} pinned (sha256 {})",
            new.triple,
            short_hash(new_sha)
        ),
    }
}

fn describe_feeds(old: &[FeedDigest], new: &[FeedDigest]) -> String {
    let mut changes = Vec::new();
    for feed in new {
        match old.iter().find(|previous| previous.name == feed.name) {
            None => changes.push(format!("{} pinned", feed.name)),
            Some(previous) if previous.sha256 == feed.sha256 => {}
            Some(previous) => changes.push(format!(
                "{} re-published (index {} → {})",
                feed.name,
                short_hash(&previous.sha256),
                short_hash(&feed.sha256)
            )),
        }
    }
    for feed in old {
        if !new.iter().any(|current| current.name == feed.name) {
            changes.push(format!("{} no longer pinned", feed.name));
        }
    }
    format!("package feeds: {}", changes.join("; "))
}

fn describe_overlay(old: &OverlayInputs, new: &OverlayInputs) -> String {
    let mut changes = Vec::new();
    for (path, fact) in &new.entries {
        match old.entries.get(path) {
            None => changes.push(format!("{path} added")),
            Some(previous) if previous == fact => {}
            Some(previous) => changes.push(describe_entry_change(path, previous, fact)),
        }
    }
    for path in old.entries.keys() {
        if !new.entries.contains_key(path) {
            changes.push(format!("{path} removed"));
        }
    }
    if changes.is_empty() {
        format!(
            "overlay tree {} → {}",
            short_hash(&old.tree_hash),
            short_hash(&new.tree_hash)
        )
    } else {
        format!("overlay: {}", changes.join("; "))
    }
}

fn describe_entry_change(path: &str, old: &OverlayFact, new: &OverlayFact) -> String {
    if old.kind != new.kind {
        return format!("{path} {} → {}", old.kind, new.kind);
    }
    let mut parts = Vec::new();
    if old.digest != new.digest {
        parts.push("changed".to_string());
    }
    if old.mode != new.mode {
        parts.push(format!("mode {:04o} → {:04o}", old.mode, new.mode));
    }
    if old.owner != new.owner {
        let show = |owner: &Option<String>| owner.clone().unwrap_or_else(|| "default".into());
        parts.push(format!("owner {} → {}", show(&old.owner), show(&new.owner)));
    }
    format!("{path} {}", parts.join(", "))
}

/// `+added -removed` between two sorted lists.
fn list_diff(old: &[String], new: &[String]) -> String {
    let added = new
        .iter()
        .filter(|name| !old.contains(name))
        .map(|name| format!("+{name}"));
    let removed = old
        .iter()
        .filter(|name| !new.contains(name))
        .map(|name| format!("-{name}"));
    let parts: Vec<String> = added.chain(removed).collect();
    if parts.is_empty() {
        "reordered".to_string()
    } else {
        parts.join(" ")
    }
}

fn show_value(value: &Value) -> String {
    match value {
        Value::Null => "none".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The first 12 hex digits of a hash, for display.
pub fn short_hash(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BuildInputs {
        let mut entries = BTreeMap::new();
        entries.insert(
            "/etc/banner".to_string(),
            OverlayFact {
                kind: "file".into(),
                mode: 0o644,
                owner: None,
                digest: "aa".repeat(32),
            },
        );
        BuildInputs {
            schema: ACTION_SCHEMA_VERSION,
            builder: BuilderPin {
                triple: Triple::new("23.05.4", "ath79", "generic"),
                archive_sha256: Some("11".repeat(32)),
                version_code: Some("r24012-d8dd03c46f".into()),
            },
            imagebuilder_profile: "tplink_archer-c7-v2".into(),
            packages: normalize_names(&[
                "luci".to_string(),
                "collectd".to_string(),
                "luci".to_string(),
            ]),
            packages_remove: vec!["ppp".into()],
            overlay: OverlayInputs {
                tree_hash: "bb".repeat(32),
                entries,
            },
            options: ImageOptions {
                extra_image_name: Some("home".into()),
                disabled_services: vec!["dnsmasq".into()],
                rootfs_partsize: None,
                add_local_key: false,
                filesystem: None,
                provenance: true,
                initramfs: None,
            },
            feeds: Vec::new(),
        }
    }

    /// Pins the key of a fixed input: if this fails, the key format changed, which makes
    /// every recorded build look stale. Bump ACTION_SCHEMA_VERSION deliberately instead.
    #[test]
    fn key_of_fixed_input_is_pinned() {
        let key = sample().key().expect("pinned builder");
        assert_eq!(
            key.0,
            "7a378df7167460e216df59824a4ecba65b7f6d30577d0a04e7220c21fdc7fc1b"
        );
    }

    #[test]
    fn unpinned_builder_has_no_key() {
        let mut inputs = sample();
        inputs.builder.archive_sha256 = None;
        assert_eq!(inputs.key(), None);
    }

    #[test]
    fn normalization_sorts_and_dedups() {
        let names = ["b", " a ", "b", ""].map(String::from);
        assert_eq!(normalize_names(&names), vec!["a", "b"]);
    }

    #[test]
    fn version_code_is_not_a_key_input() {
        let mut other = sample();
        other.builder.version_code = Some("r1-0000000000".into());
        assert_eq!(sample().key(), other.key());
    }

    #[test]
    fn every_field_changes_the_key_and_is_explained() {
        let base = sample();
        type Mutation = Box<dyn Fn(&mut BuildInputs)>;
        let mutations: Vec<(&str, Mutation)> = vec![
            ("schema", Box::new(|i| i.schema += 1)),
            (
                "builder",
                Box::new(|i| i.builder.archive_sha256 = Some("22".repeat(32))),
            ),
            (
                "imagebuilder_profile",
                Box::new(|i| i.imagebuilder_profile = "x".into()),
            ),
            ("packages", Box::new(|i| i.packages.push("tcpdump".into()))),
            ("packages_remove", Box::new(|i| i.packages_remove.clear())),
            (
                "overlay",
                Box::new(|i| i.overlay.tree_hash = "cc".repeat(32)),
            ),
            (
                "options.extra_image_name",
                Box::new(|i| i.options.extra_image_name = None),
            ),
            (
                "options.disabled_services",
                Box::new(|i| i.options.disabled_services.clear()),
            ),
            (
                "options.rootfs_partsize",
                Box::new(|i| i.options.rootfs_partsize = Some(256)),
            ),
            (
                "options.add_local_key",
                Box::new(|i| i.options.add_local_key = true),
            ),
            (
                "options.filesystem",
                Box::new(|i| i.options.filesystem = Some("ext4".into())),
            ),
            (
                "options.provenance",
                Box::new(|i| i.options.provenance = false),
            ),
            (
                "feeds",
                Box::new(|i| {
                    i.feeds = vec![FeedDigest {
                        name: "openwrt_base".into(),
                        sha256: "33".repeat(32),
                    }]
                }),
            ),
            (
                "options.initramfs",
                Box::new(|i| {
                    i.options.initramfs = Some(InitramfsImage {
                        name: "x-initramfs-kernel.bin".into(),
                        sha256: "ee".repeat(32),
                    })
                }),
            ),
        ];
        for (name, mutate) in mutations {
            let mut changed = base.clone();
            mutate(&mut changed);
            assert_ne!(changed.key(), base.key(), "{name} must change the key");
            let reasons = changed.explain_against(&base);
            let fields: Vec<&str> = reasons.iter().map(|r| r.field.as_str()).collect();
            assert_eq!(fields, vec![name], "{name} must be explained alone");
        }
    }

    #[test]
    fn explanations_read_well() {
        let base = sample();
        let mut changed = base.clone();
        changed.packages = normalize_names(&["collectd".to_string(), "tcpdump".to_string()]);
        changed.overlay.tree_hash = "cc".repeat(32);
        let banner = changed
            .overlay
            .entries
            .get_mut("/etc/banner")
            .expect("entry");
        banner.digest = "dd".repeat(32);
        banner.mode = 0o600;
        changed.overlay.entries.insert(
            "/etc/motd".into(),
            OverlayFact {
                kind: "file".into(),
                mode: 0o644,
                owner: None,
                digest: "ee".repeat(32),
            },
        );
        changed.builder.archive_sha256 = Some("22".repeat(32));
        let texts: Vec<String> = changed
            .explain_against(&base)
            .into_iter()
            .map(|r| r.text)
            .collect();
        assert_eq!(
            texts,
            vec![
                "Image Builder 23.05.4/ath79/generic re-spun (sha256 111111111111 → 222222222222)",
                "packages: +tcpdump -luci",
                "overlay: /etc/banner changed, mode 0644 → 0600; /etc/motd added",
            ]
        );
    }

    #[test]
    fn a_re_published_feed_changes_the_key_and_says_which() {
        let feed = |sha: &str| FeedDigest {
            name: "openwrt_packages".into(),
            sha256: sha.repeat(32),
        };
        let mut old = sample();
        old.feeds = vec![feed("44")];
        let mut new = old.clone();
        new.feeds = vec![feed("55")];
        assert_ne!(old.key(), new.key());
        let reasons = new.explain_against(&old);
        assert_eq!(
            reasons[0].text,
            "package feeds: openwrt_packages re-published (index 444444444444 → 555555555555)"
        );
        // The key of a build without pinned feeds is what it was before feeds existed.
        assert_eq!(
            sample().key().map(|key| key.0),
            Some("7a378df7167460e216df59824a4ecba65b7f6d30577d0a04e7220c21fdc7fc1b".into())
        );
    }

    #[test]
    fn provenance_is_the_key_inputs_and_nothing_else() {
        let inputs = sample();
        let key = inputs.key().expect("pinned builder");
        let provenance = inputs.provenance(&key);
        assert_eq!(provenance["build_key"], key.0.as_str());
        let recorded = provenance["key_inputs"].as_object().expect("inputs");
        let names: Vec<&str> = inputs
            .hashed_fields()
            .iter()
            .map(|field| field.name)
            .collect();
        let mut keys: Vec<&str> = recorded.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut expected = names.clone();
        expected.sort_unstable();
        assert_eq!(keys, expected);
        let text = provenance.to_string();
        assert!(
            !text.contains("profile_id") && !text.contains("fleet"),
            "{text}"
        );
        // The same inputs give the same bytes, whoever asks.
        assert_eq!(provenance, sample().provenance(&key));
        // Pinned feeds are key inputs, so they are in the provenance too.
        let mut pinned = sample();
        pinned.feeds = vec![FeedDigest {
            name: "openwrt_core".into(),
            sha256: "66".repeat(32),
        }];
        let key = pinned.key().expect("pinned builder");
        assert_eq!(
            pinned.provenance(&key)["key_inputs"]["feeds"]["openwrt_core"],
            "66".repeat(32).as_str()
        );
    }

    #[test]
    fn make_packages_lists_adds_then_removals() {
        assert_eq!(sample().make_packages(), "collectd luci -ppp");
    }
}
