//! Owners (`user[:group]`) of overlay entries: syntax checks at resolve time, and resolution
//! of names to ids through passwd/group files at staging time. Never changes ownership itself.

use std::path::Path;

use crate::error::Problem;

/// A parsed `user[:group]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct OwnerSpec<'a> {
    pub user: &'a str,
    pub group: Option<&'a str>,
}

impl<'a> OwnerSpec<'a> {
    pub(crate) fn parse(text: &'a str) -> Result<OwnerSpec<'a>, Problem> {
        let (user, group) = match text.split_once(':') {
            Some((user, group)) => (user, Some(group)),
            None => (text, None),
        };
        if !valid_name(user) || !group.is_none_or(valid_name) {
            return Err(Problem::validation(format!(
                "owner `{text}` is not `user` or `user:group`"
            ))
            .with_help("use names or numbers, e.g. `root:root` or `0:0`"));
        }
        Ok(OwnerSpec { user, group })
    }
}

fn valid_name(name: &str) -> bool {
    let mut characters = name.chars();
    characters
        .next()
        .is_some_and(|first| first.is_ascii_alphanumeric() || first == '_')
        && characters.all(|character| {
            character.is_ascii_alphanumeric() || matches!(character, '_' | '.' | '-')
        })
}

/// Numeric ids for `chown`; `None` leaves that id unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OwnerIds {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

/// Name → id tables read from `passwd` and `group` files.
#[derive(Debug, Default)]
pub(crate) struct IdTables {
    users: Vec<(String, u32)>,
    groups: Vec<(String, u32)>,
}

impl IdTables {
    /// Reads `<root>/etc/passwd` and `<root>/etc/group`; a missing file gives an empty table,
    /// so only numeric owners resolve.
    pub(crate) fn load(root: &Path) -> IdTables {
        let read =
            |name: &str| std::fs::read_to_string(root.join("etc").join(name)).unwrap_or_default();
        IdTables {
            users: parse_id_file(&read("passwd")),
            groups: parse_id_file(&read("group")),
        }
    }

    pub(crate) fn resolve(&self, spec: &OwnerSpec) -> Result<OwnerIds, String> {
        let uid = lookup(&self.users, spec.user)
            .ok_or_else(|| format!("user `{}` is not in passwd", spec.user))?;
        let gid = match spec.group {
            Some(group) => Some(
                lookup(&self.groups, group)
                    .ok_or_else(|| format!("group `{group}` is not in group"))?,
            ),
            None => None,
        };
        Ok(OwnerIds {
            uid: Some(uid),
            gid,
        })
    }
}

fn lookup(table: &[(String, u32)], name: &str) -> Option<u32> {
    if let Ok(id) = name.parse::<u32>() {
        return Some(id);
    }
    table
        .iter()
        .find(|(entry, _)| entry == name)
        .map(|(_, id)| *id)
}

/// `name:x:id:...` lines; comments and malformed lines are skipped.
fn parse_id_file(text: &str) -> Vec<(String, u32)> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let id = fields.nth(1)?.parse().ok()?;
            Some((name.to_string(), id))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rejects_owner_syntax() {
        assert_eq!(
            OwnerSpec::parse("root:root").ok(),
            Some(OwnerSpec {
                user: "root",
                group: Some("root")
            })
        );
        assert_eq!(
            OwnerSpec::parse("0").ok(),
            Some(OwnerSpec {
                user: "0",
                group: None
            })
        );
        for bad in ["", ":", "root:", "ro ot", "-x", "a:b:c"] {
            assert!(OwnerSpec::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn resolves_names_and_numbers() {
        let tables = IdTables {
            users: parse_id_file(
                "# c\nroot:x:0:0:root:/root:/bin/ash\nnetwork:*:101:101::/var:/bin/false\n",
            ),
            groups: parse_id_file("root:x:0:\nnetwork:x:101:\n"),
        };
        let resolve = |text| tables.resolve(&OwnerSpec::parse(text).map_err(|p| p.message)?);
        assert_eq!(
            resolve("network:root"),
            Ok(OwnerIds {
                uid: Some(101),
                gid: Some(0)
            })
        );
        assert_eq!(
            resolve("7:8"),
            Ok(OwnerIds {
                uid: Some(7),
                gid: Some(8)
            })
        );
        assert_eq!(
            resolve("root"),
            Ok(OwnerIds {
                uid: Some(0),
                gid: None
            })
        );
        assert!(resolve("nobody").is_err());
        assert!(resolve("root:wheel").is_err());
    }
}
