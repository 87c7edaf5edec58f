//! The profile types: one device build recipe as the user wrote it (seed schema and field
//! names), already validated by `manifest::read`. No I/O and no parsing here.

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use crate::triple::Triple;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::error::Location;
use crate::source::{Node, SourceFile, Spanned};

/// One device build recipe. Serialization skips absent and default values, so an exported
/// profile reads back to an equal value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub profile_id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub device_id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    pub openwrt_release: String,
    pub target: String,
    pub subtarget: String,
    pub imagebuilder_profile: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages_remove: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileEntry>,
    /// A directory (relative to the fleet root) copied whole into the image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overlay_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Policies::is_default")]
    pub policies: Policies,
    #[serde(default, skip_serializing_if = "BuildDefaults::is_default")]
    pub build_defaults: BuildDefaults,
    /// Where a copy of the images goes after a build; not a build input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bin_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_image_name: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disabled_services: Vec<String>,
    /// Root filesystem partition size in MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs_partsize: Option<u32>,
    /// The most bytes the device's flash takes for the image (docs/feeds.md, "Size budget");
    /// written as bytes or with a `k`, `m` or `g` suffix (KiB, MiB, GiB). Not a build input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_image_size: Option<u64>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub add_local_key: bool,
    /// Whether imagegen writes `/etc/imagegen/build.json` into the image.
    #[serde(default = "default_true", skip_serializing_if = "is_true")]
    pub provenance: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// The bookkeeping block the original tool's exports carry (`meta`); kept for people and
    /// round trips, never used to build anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<ProfileMeta>,
}

/// `meta` as the original tool exported it: when and by whom the profile was made.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
}

impl Profile {
    /// Whether the release is a nightly (`SNAPSHOT` or `<branch>-SNAPSHOT`).
    /// The Image Builder this profile builds with.
    pub fn triple(&self) -> Triple {
        Triple::new(
            self.openwrt_release.as_str(),
            self.target.as_str(),
            self.subtarget.as_str(),
        )
    }

    pub fn is_snapshot(&self) -> bool {
        is_snapshot_release(&self.openwrt_release)
    }
}

/// One file copied into the image overlay.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path relative to the fleet root.
    pub source: String,
    /// Absolute path inside the image.
    pub destination: String,
    /// Permission bits (at most `0o7777`); written as an octal string such as `"0644"`.
    #[schema(value_type = Option<String>)]
    #[serde(default, with = "octal_mode", skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// `user` or `user:group`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

/// Image policies. `None` leaves the Image Builder's default alone.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Policies {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filesystem: Option<Filesystem>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_kernel_symbols: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strip_debug: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_resize_rootfs: Option<bool>,
    /// Must be `true` for `SNAPSHOT` and `<branch>-SNAPSHOT` releases.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_snapshot: bool,
}

impl Policies {
    pub fn is_default(&self) -> bool {
        *self == Policies::default()
    }
}

/// Root filesystem types an Image Builder can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    Squashfs,
    Ext4,
    Ubifs,
    Jffs2,
}

impl Filesystem {
    pub const ALL: [Filesystem; 4] = [
        Filesystem::Squashfs,
        Filesystem::Ext4,
        Filesystem::Ubifs,
        Filesystem::Jffs2,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Filesystem::Squashfs => "squashfs",
            Filesystem::Ext4 => "ext4",
            Filesystem::Ubifs => "ubifs",
            Filesystem::Jffs2 => "jffs2",
        }
    }

    pub fn parse(text: &str) -> Option<Filesystem> {
        Filesystem::ALL
            .into_iter()
            .find(|filesystem| filesystem.as_str() == text)
    }
}

impl fmt::Display for Filesystem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Defaults for how a build runs (not inputs of the build key).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BuildDefaults {
    #[serde(default, skip_serializing_if = "is_false")]
    pub rebuild_if_cached: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub initramfs: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_build_dir: bool,
}

impl BuildDefaults {
    pub fn is_default(&self) -> bool {
        *self == BuildDefaults::default()
    }
}

/// A profile as loaded from a file, with the text it came from for error locations.
#[derive(Debug, Clone)]
pub struct LoadedProfile {
    pub profile: Profile,
    pub source: Arc<SourceFile>,
    pub(crate) tree: Spanned<Node>,
}

impl LoadedProfile {
    /// A profile that did not come from a file (an API request, a test): its source is the
    /// profile exported as YAML under `display_name`, so locations still point somewhere real.
    pub fn detached(profile: Profile, display_name: &str) -> crate::error::Result<LoadedProfile> {
        let text = super::export::export_profile(&profile, crate::source::Format::Yaml)?;
        let source = Arc::new(SourceFile::new(
            display_name.into(),
            display_name.to_string(),
            text,
        ));
        let tree =
            crate::source::parse(&source, crate::source::Format::Yaml).map_err(|problem| {
                crate::error::Error::from_problems("exported profile does not parse", vec![problem])
            })?;
        Ok(LoadedProfile {
            profile,
            source,
            tree,
        })
    }

    /// Where a field is, by path (`openwrt_release`, `files[0].source`); falls back to the
    /// start of the document when the field is not written in the file.
    pub fn location(&self, field_path: &str) -> Location {
        Location::at(&self.source, self.span(field_path))
    }

    /// The byte span of a field's value (the document start when absent).
    pub fn span(&self, field_path: &str) -> Range<usize> {
        self.tree
            .lookup(field_path)
            .map(|node| node.span.clone())
            .unwrap_or(0..0)
    }
}

/// The `profiles list` filters; every set filter must match.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ProfileFilter {
    pub tag: Option<String>,
    pub release: Option<String>,
    pub target: Option<String>,
    pub subtarget: Option<String>,
    pub device: Option<String>,
}

impl ProfileFilter {
    pub fn matches(&self, profile: &Profile) -> bool {
        let equal = |filter: &Option<String>, value: &str| {
            filter.as_deref().is_none_or(|wanted| wanted == value)
        };
        self.tag
            .as_deref()
            .is_none_or(|tag| profile.tags.iter().any(|have| have == tag))
            && equal(&self.release, &profile.openwrt_release)
            && equal(&self.target, &profile.target)
            && equal(&self.subtarget, &profile.subtarget)
            && equal(&self.device, &profile.device_id)
    }
}

/// `SNAPSHOT` or `<major>.<minor>-SNAPSHOT`.
pub fn is_snapshot_release(release: &str) -> bool {
    release == "SNAPSHOT" || release.ends_with("-SNAPSHOT")
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_true(value: &bool) -> bool {
    *value
}

fn default_true() -> bool {
    true
}

/// File modes as octal strings (`"0644"`), the way people write them.
mod octal_mode {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(mode: &Option<u32>, serializer: S) -> Result<S::Ok, S::Error> {
        match mode {
            Some(mode) => serializer.serialize_str(&format!("{mode:04o}")),
            None => serializer.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<u32>, D::Error> {
        let text: Option<String> = Option::deserialize(deserializer)?;
        text.map(|text| {
            crate::manifest::rules::parse_mode_text(&text)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid file mode `{text}`")))
        })
        .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detached_profiles_have_real_locations() {
        let yaml = "profile_id: a\nname: A\ndevice_id: d\nopenwrt_release: 23.05.4\ntarget: t\nsubtarget: s\nimagebuilder_profile: p\n";
        let source = Arc::new(SourceFile::new(
            "a.yaml".into(),
            "a.yaml".into(),
            yaml.into(),
        ));
        let profile = match crate::manifest::parse_profile(&source, crate::source::Format::Yaml) {
            Ok(loaded) => loaded.profile,
            Err(problems) => panic!("{problems:?}"),
        };
        let detached = LoadedProfile::detached(profile.clone(), "api:a")
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(detached.profile, profile);
        assert_eq!(detached.location("target").to_string(), "api:a:5:9");
    }
}
