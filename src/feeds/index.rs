//! A feed index as opkg reads it: `Packages` control stanzas (`Package`, `Version`,
//! `Depends`, `Provides`, `Conflicts`, `Filename`, `Size`, `Installed-Size`, `SHA256sum`, ...),
//! and the stand-in `packages.adb`, which has the same text (docs/feeds.md). Parsing is
//! linear and never fails on content: a stanza without `Package` is skipped, a malformed
//! field leaves the package unusable for download (see [`Package::file`]), not the index.

use super::version::Op;

/// A package relation: `kernel (= 5.15.162-1-abc)`, `libc`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Relation {
    pub name: String,
    pub constraint: Option<(Op, String)>,
}

impl Relation {
    /// Parses one relation (`name`, `name (op version)`, or apk's `name>=version`).
    fn parse(text: &str) -> Option<Relation> {
        let text = text.trim();
        let end = text
            .find(|c: char| c.is_whitespace() || matches!(c, '(' | '<' | '>' | '='))
            .unwrap_or(text.len());
        let name = &text[..end];
        if name.is_empty() {
            return None;
        }
        let rest = text[end..]
            .trim()
            .trim_start_matches('(')
            .trim_end_matches(')');
        let constraint =
            Op::split(rest.trim()).map(|(op, version)| (op, version.trim().to_string()));
        Some(Relation {
            name: name.to_string(),
            constraint,
        })
    }

    /// Whether `version` satisfies this relation's constraint (true without one).
    pub(crate) fn accepts(&self, version: &str) -> bool {
        self.constraint
            .as_ref()
            .is_none_or(|(op, wanted)| op.accepts(version, wanted))
    }
}

impl std::fmt::Display for Relation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.constraint {
            Some((op, version)) => write!(f, "{} ({} {version})", self.name, op.symbol()),
            None => f.write_str(&self.name),
        }
    }
}

/// One package of an index.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Package {
    pub name: String,
    pub version: String,
    /// Each entry is a list of alternatives (`a | b`).
    pub depends: Vec<Vec<Relation>>,
    pub provides: Vec<String>,
    pub conflicts: Vec<Relation>,
    pub filename: String,
    /// Bytes of the package file (`Size`).
    pub size: Option<u64>,
    pub installed_size: u64,
    pub sha256: String,
}

/// Where a package file is and what it must hash to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PackageFile<'a> {
    pub filename: &'a str,
    pub size: u64,
    pub sha256: &'a str,
}

impl Package {
    /// The file to download, when the index describes it fully: a plain file name in the
    /// feed directory (no `/`, no `..`: a hostile index must not point outside it), a size
    /// and a SHA-256 digest. `Err` says what is missing.
    pub(crate) fn file(&self) -> Result<PackageFile<'_>, &'static str> {
        let name = self.filename.as_str();
        let plain = !name.is_empty()
            && name != "."
            && name != ".."
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-+~".contains(c));
        if !plain {
            return Err("no plain `Filename`");
        }
        if !crate::cas::is_sha256_hex(&self.sha256) {
            return Err("no valid `SHA256sum`");
        }
        let size = self.size.ok_or("no valid `Size`")?;
        Ok(PackageFile {
            filename: name,
            size,
            sha256: &self.sha256,
        })
    }
}

/// Parses an index. Fields may be in any order; continuation lines (leading space) belong to
/// the field before and are ignored (only `Description` uses them).
pub(crate) fn parse(text: &str) -> Vec<Package> {
    let mut packages = Vec::new();
    let mut current = Package::default();
    for line in text.lines() {
        if line.trim().is_empty() {
            finish(&mut current, &mut packages);
            continue;
        }
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let Some((field, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match field {
            "Package" => current.name = value.to_string(),
            "Version" => current.version = value.to_string(),
            "Depends" => current.depends = depends(value),
            "Provides" => {
                current.provides = list(value)
                    .filter_map(Relation::parse)
                    .map(|relation| relation.name)
                    .collect()
            }
            "Conflicts" => current.conflicts = list(value).filter_map(Relation::parse).collect(),
            "Filename" => current.filename = value.to_string(),
            "Size" => current.size = value.parse().ok(),
            "Installed-Size" => current.installed_size = value.parse().unwrap_or(0),
            "SHA256sum" => current.sha256 = value.to_ascii_lowercase(),
            _ => {}
        }
    }
    finish(&mut current, &mut packages);
    packages
}

fn finish(current: &mut Package, packages: &mut Vec<Package>) {
    let package = std::mem::take(current);
    if !package.name.is_empty() {
        packages.push(package);
    }
}

fn list(value: &str) -> impl Iterator<Item = &str> {
    value
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

fn depends(value: &str) -> Vec<Vec<Relation>> {
    list(value)
        .map(|entry| {
            entry
                .split('|')
                .filter_map(Relation::parse)
                .collect::<Vec<_>>()
        })
        .filter(|alternatives| !alternatives.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = "Package: dnsmasq\nVersion: 2.90-2\nDepends: libc, libubus (>= 2023-06-05)\nConflicts: dnsmasq-full\nArchitecture: x86_64\nInstalled-Size: 2048\nFilename: dnsmasq_2.90-2_x86_64.ipk\nSize: 512\nSHA256sum: ABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABABAB\nDescription: a\n continued\n\nPackage: wpad\nVersion: 1\nProvides: hostapd, wpa-supplicant (= 1)\nDepends: a | b (<< 2)\nFilename: ../../etc/passwd\n\nVersion: orphan\n";

    #[test]
    fn stanzas_become_packages() {
        let packages = parse(INDEX);
        assert_eq!(packages.len(), 2);
        let dnsmasq = &packages[0];
        assert_eq!(dnsmasq.version, "2.90-2");
        assert_eq!(dnsmasq.depends.len(), 2);
        assert_eq!(dnsmasq.depends[1][0].to_string(), "libubus (>= 2023-06-05)");
        assert_eq!(dnsmasq.conflicts[0].name, "dnsmasq-full");
        assert_eq!(dnsmasq.installed_size, 2048);
        let file = dnsmasq.file().expect("complete entry");
        assert_eq!(
            (file.filename, file.size),
            ("dnsmasq_2.90-2_x86_64.ipk", 512)
        );
        assert_eq!(file.sha256, "ab".repeat(32));
        let wpad = &packages[1];
        assert_eq!(wpad.provides, ["hostapd", "wpa-supplicant"]);
        assert_eq!(wpad.depends[0].len(), 2);
        assert!(!wpad.depends[0][1].accepts("2"));
        assert_eq!(wpad.file(), Err("no plain `Filename`"));
    }

    #[test]
    fn apk_style_relations_parse_too() {
        let relation = Relation::parse("libc>=1.2").expect("relation");
        assert_eq!(relation.name, "libc");
        assert!(relation.accepts("1.2.4-r4"));
        assert!(Relation::parse("  ").is_none());
    }
}
