//! Parse a target directory's `sha256sums` and find the Image Builder archive in it.
//!
//! Pure functions over bytes; callers verify the signature before trusting any line.

use crate::error::{Error, ErrorCode, Result};

/// One `sha256sums` line: lowercase hex digest and the relative path it covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumEntry {
    pub sha256: String,
    pub path: String,
}

/// Parses `<64 hex> *<path>` lines (and coreutils text mode `<64 hex>  <path>`); blank lines
/// are skipped, anything else is an error naming the line.
pub fn parse(bytes: &[u8]) -> Result<Vec<ChecksumEntry>> {
    let text = std::str::from_utf8(bytes).map_err(|_| {
        Error::new(
            ErrorCode::DownloadError,
            "`sha256sums` is not valid UTF-8 text",
        )
    })?;
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry = parse_line(line).ok_or_else(|| {
            Error::new(
                ErrorCode::DownloadError,
                format!(
                    "`sha256sums` line {}: expected `<sha256> *<path>`, found `{}`",
                    index + 1,
                    line.chars().take(120).collect::<String>()
                ),
            )
        })?;
        entries.push(entry);
    }
    Ok(entries)
}

fn parse_line(line: &str) -> Option<ChecksumEntry> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let (digest, rest) = line.split_at_checked(64)?;
    if !digest.bytes().all(|byte| byte.is_ascii_hexdigit()) {
        return None;
    }
    let path = rest
        .strip_prefix(" *")
        .or_else(|| rest.strip_prefix("  "))?;
    if path.is_empty() {
        return None;
    }
    Some(ChecksumEntry {
        sha256: digest.to_ascii_lowercase(),
        path: path.to_string(),
    })
}

/// The digest listed for `path`, if any.
pub fn lookup<'a>(entries: &'a [ChecksumEntry], path: &str) -> Option<&'a str> {
    entries
        .iter()
        .find(|entry| entry.path == path)
        .map(|entry| entry.sha256.as_str())
}

/// True for a name that `find_imagebuilder` accepts as an Image Builder archive.
pub fn is_imagebuilder_name(path: &str) -> bool {
    !path.contains('/')
        && path.contains("-imagebuilder-")
        && (path.ends_with(".tar.xz") || path.ends_with(".tar.zst"))
}

/// The one Image Builder archive listed: `(file name, sha256)`. The name is read, never guessed.
pub fn find_imagebuilder(entries: &[ChecksumEntry]) -> Result<(String, String)> {
    let found: Vec<&ChecksumEntry> = entries
        .iter()
        .filter(|entry| is_imagebuilder_name(&entry.path))
        .collect();
    match found.as_slice() {
        [entry] => Ok((entry.path.clone(), entry.sha256.clone())),
        [] => {
            let listed: Vec<&str> = entries
                .iter()
                .filter(|entry| !entry.path.contains('/'))
                .map(|entry| entry.path.as_str())
                .collect();
            Err(Error::new(
                ErrorCode::ImagebuilderError,
                "no Image Builder archive (`*-imagebuilder-*.tar.xz` or `.tar.zst`) is listed in `sha256sums`",
            )
            .with_help(format!("the target directory lists: {}", summarize(&listed)))
            .with_details(serde_json::json!({ "listed": listed })))
        }
        several => Err(Error::new(
            ErrorCode::ImagebuilderError,
            format!(
                "`sha256sums` lists {} Image Builder archives: {}",
                several.len(),
                summarize(
                    &several
                        .iter()
                        .map(|entry| entry.path.as_str())
                        .collect::<Vec<_>>()
                )
            ),
        )),
    }
}

fn summarize(names: &[&str]) -> String {
    const SHOWN: usize = 12;
    if names.is_empty() {
        return "nothing".to_string();
    }
    let mut text = names
        .iter()
        .take(SHOWN)
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        text.push_str(&format!(" and {} more", names.len() - SHOWN));
    }
    text
}

/// Renders entries in the real format: sorted by path (byte order), `<hex> *<path>\n`.
pub fn render(entries: &[ChecksumEntry]) -> String {
    let mut sorted: Vec<&ChecksumEntry> = entries.iter().collect();
    sorted.sort_by(|a, b| a.path.as_bytes().cmp(b.path.as_bytes()));
    sorted
        .iter()
        .map(|entry| format!("{} *{}\n", entry.sha256, entry.path))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "4e6455a4c5f3ab6a27d5e38c2dc3b7d8c7b2e0d1f1d98b3ba6fb7e5c6c868599";

    #[test]
    fn parses_binary_and_text_mode_lines() {
        let text = format!(
            "{A} *openwrt-imagebuilder-23.05.4-x86-64.Linux-x86_64.tar.xz\n\n{}  packages/Packages.gz\n",
            A.to_uppercase()
        );
        let entries = parse(text.as_bytes()).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].sha256, A);
        assert_eq!(entries[1].path, "packages/Packages.gz");
        let found = find_imagebuilder(&entries).unwrap();
        assert_eq!(
            found.0,
            "openwrt-imagebuilder-23.05.4-x86-64.Linux-x86_64.tar.xz"
        );
    }

    #[test]
    fn malformed_line_names_its_number() {
        let text = format!("{A} *ok\nnot a line\n");
        let error = parse(text.as_bytes()).unwrap_err();
        assert!(
            error.message.starts_with("`sha256sums` line 2:"),
            "{}",
            error.message
        );
        assert!(parse(format!("{A} ok\n").as_bytes()).is_err());
        assert!(parse(format!("{} *x\n", &A[..63]).as_bytes()).is_err());
    }

    #[test]
    fn imagebuilder_must_be_top_level_with_known_suffix() {
        let entries = parse(
            format!(
                "{A} *sub/openwrt-imagebuilder-x.tar.zst\n{A} *openwrt-imagebuilder-x.tar.bz2\n{A} *profiles.json\n"
            )
            .as_bytes(),
        )
        .unwrap();
        let error = find_imagebuilder(&entries).unwrap_err();
        assert_eq!(error.code, ErrorCode::ImagebuilderError);
        assert!(error.help.unwrap().contains("`profiles.json`"));
    }

    #[test]
    fn render_sorts_and_round_trips() {
        let entries = vec![
            ChecksumEntry {
                sha256: A.into(),
                path: "b".into(),
            },
            ChecksumEntry {
                sha256: A.into(),
                path: "B".into(),
            },
        ];
        let text = render(&entries);
        assert_eq!(text, format!("{A} *B\n{A} *b\n"));
        assert_eq!(parse(text.as_bytes()).unwrap().len(), 2);
    }
}
