//! The character rules of every profile value that reaches the Image Builder's `make` and the
//! shell code of its recipes: package, builder, image and service names, and the paths of the
//! overlay. One source of truth: `validate` applies them with locations (`manifest::rules`,
//! `overlay`), and the build applies them again right before running `make` (`build::run`),
//! as defence in depth. Pure functions, no I/O.
//!
//! Why so strict: command-line variables are expanded by make (`$(shell …)`, `$(eval …)`)
//! and pasted unquoted into shell recipes, and upstream's `include/rootfs.mk` runs
//! `find … | xargs rm -rf` over the overlay tree, which splits on whitespace and quotes.

/// Characters make, a recipe's shell or `xargs` would interpret. Never allowed in a value
/// passed to make, whatever the variable.
const MAKE_META: &str = "$`\\\"';&|<>(){}*?[]#!%";

/// Longest package, service or Image Builder name we accept.
const MAX_NAME_LEN: usize = 128;

/// The first character of `value` that make or the shell would interpret (controls, and
/// spaces unless `spaces_allowed`).
pub(crate) fn make_meta_char(value: &str, spaces_allowed: bool) -> Option<char> {
    value.chars().find(|&c| {
        c.is_control()
            || (c.is_whitespace() && !(c == ' ' && spaces_allowed))
            || MAKE_META.contains(c)
    })
}

/// An OpenWrt package name as opkg and apk know them: `kmod-usb-storage`, `luci-i18n-base-de`,
/// `python3-pip`. No paths (`/srv/x.ipk`), URLs, make or shell syntax.
pub(crate) fn package_name_problem(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '-'));
    (!valid).then(|| {
        "expected a package name: letters, digits, `.`, `_`, `+` or `-`, starting with a letter or digit (no paths, URLs or shell syntax)"
            .to_string()
    })
}

/// `target`, `subtarget` and `imagebuilder_profile`: one plain name, used in mirror URLs,
/// cache paths and as `PROFILE=`.
pub(crate) fn builder_name_problem(name: &str) -> Option<String> {
    let charset = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ',' | '-'));
    if !charset {
        return Some("expected letters, digits, `_`, `.`, `,` or `-`".to_string());
    }
    if name.starts_with(['.', '-']) {
        return Some("must not start with `.` or `-` (`.` and `..` are path components)".into());
    }
    None
}

/// `extra_image_name` (`EXTRA_IMAGE_NAME`): the Image Builder lowercases it and turns `_`
/// into `-` in file names; a space would split the recipes' shell words.
pub(crate) fn extra_image_name_problem(name: &str) -> Option<String> {
    let valid = (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    (!valid).then(|| {
        let hint = if name.contains(' ') {
            " (write `-` for a space: the image file names get `-` either way)"
        } else {
            ""
        };
        format!("use 1 to 64 letters, digits, `.`, `_` or `-`{hint}")
    })
}

/// A service name in `disabled_services` (`/etc/init.d/<name>`).
pub(crate) fn service_name_problem(name: &str) -> Option<String> {
    let valid = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    (!valid).then(|| "expected a service name (`/etc/init.d/<name>`)".to_string())
}

/// Characters allowed in one component of a path placed in the image (a `destination`, or a
/// name inside an `overlay_dir` or a source directory): letters, digits and `. _ - + , @ : =`.
/// No whitespace, control, quote, glob or shell characters: upstream feeds these names to
/// `find | xargs` and shell loops on the build host. A component may not start with `-`.
pub(crate) fn is_image_path_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '+' | ',' | '@' | ':' | '=')
}

/// Why one component of a path placed in the image is refused, if it is.
pub(crate) fn image_name_problem(name: &str) -> Option<String> {
    if let Some(bad) = name.chars().find(|&c| !is_image_path_char(c)) {
        return Some(format!(
            "contains {}, which the Image Builder's shell code would split or interpret; use letters, digits and `. _ - + , @ : =`",
            describe_char(bad)
        ));
    }
    if name.starts_with('-') {
        return Some("starts with `-`, which commands would read as an option".to_string());
    }
    None
}

/// A character for a message: quoted when printable, as an escape otherwise.
pub(crate) fn describe_char(c: char) -> String {
    match c {
        ' ' => "a space".to_string(),
        '\t' => "a tab".to_string(),
        '\n' | '\r' => "a line break".to_string(),
        c if c.is_control() || c.is_whitespace() => format!("`{}`", c.escape_unicode()),
        '`' => "a backtick".to_string(),
        c => format!("`{c}`"),
    }
}

/// The rule for a whole `make image` variable as imagegen passes it: the build's last check
/// before `make` runs. `None` when the value is safe.
pub(crate) fn make_variable_problem(name: &str, value: &str) -> Option<String> {
    let words = |value: &str, rule: fn(&str) -> Option<String>| {
        // An empty list (`PACKAGES=`) is valid: the profile adds and removes nothing.
        value
            .split(' ')
            .filter(|word| !word.is_empty())
            .find_map(|word| {
                let word = word.strip_prefix('-').unwrap_or(word);
                rule(word).map(|problem| format!("`{word}`: {problem}"))
            })
    };
    let specific = match name {
        "PACKAGES" => words(value, package_name_problem),
        "DISABLED_SERVICES" => words(value, service_name_problem),
        "PROFILE" => builder_name_problem(value),
        "EXTRA_IMAGE_NAME" => extra_image_name_problem(value),
        "ROOTFS_PARTSIZE" | "ADD_LOCAL_KEY" => (value.is_empty()
            || !value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| "expected a number".to_string()),
        _ => None,
    };
    let spaces_allowed = matches!(name, "PACKAGES" | "DISABLED_SERVICES");
    specific.or_else(|| {
        make_meta_char(value, spaces_allowed).map(|c| {
            format!(
                "contains {}, which make or the shell would interpret",
                describe_char(c)
            )
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_lists_are_valid_make_values() {
        assert_eq!(make_variable_problem("PACKAGES", ""), None);
        assert_eq!(make_variable_problem("DISABLED_SERVICES", ""), None);
        assert!(make_variable_problem("PACKAGES", "luci $(x)").is_some());
    }

    #[test]
    fn package_names() {
        for good in [
            "luci",
            "kmod-usb-storage",
            "luci-i18n-base-zh-cn",
            "libstdcpp6",
            "gtk+",
            "python3.11",
        ] {
            assert_eq!(package_name_problem(good), None, "{good}");
        }
        for bad in [
            "$(eval x)",
            "a;b",
            "`id`",
            "a#b",
            "\"a\"",
            "'a'",
            "a|b",
            "%",
            "a%b",
            "/srv/x.ipk",
            "http://example.com/x.ipk",
            "",
            "-x",
            ".hidden",
            "a b",
            "a\u{1b}b",
        ] {
            assert!(package_name_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn builder_names() {
        for good in [
            "ath79",
            "generic",
            "tplink_archer-c7-v2",
            "64",
            "mt7621",
            "8dev_carambola2",
        ] {
            assert_eq!(builder_name_problem(good), None, "{good}");
        }
        for bad in ["..", ".", "a/b", "../x", "-x", ".x", "a b", ""] {
            assert!(builder_name_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn image_names() {
        for good in [
            "banner",
            "libstdc++.so.6",
            "brcmfmac43455-sdio.raspberrypi,4-model-b.txt",
            "x@y:z=1",
        ] {
            assert_eq!(image_name_problem(good), None, "{good}");
        }
        for bad in [
            "a b", "a\tb", "a\nb", "'q'", "\"q\"", "*", "a?", "[x]", "$x", "a;b", "a\\b", "-rf",
            "a`b`", "é",
        ] {
            assert!(image_name_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn make_variables_as_the_build_passes_them() {
        assert_eq!(make_variable_problem("PACKAGES", "luci -ppp kmod-x"), None);
        assert_eq!(
            make_variable_problem("PACKAGES", "luci /srv/x.ipk").as_deref(),
            Some(
                "`/srv/x.ipk`: expected a package name: letters, digits, `.`, `_`, `+` or `-`, starting with a letter or digit (no paths, URLs or shell syntax)"
            )
        );
        assert!(make_variable_problem("PROFILE", "..").is_some());
        assert!(make_variable_problem("EXTRA_IMAGE_NAME", "my build").is_some());
        assert_eq!(make_variable_problem("BIN_DIR", "/tmp/x/out"), None);
        assert_eq!(
            make_variable_problem("BIN_DIR", "/tmp/x y").as_deref(),
            Some("contains a space, which make or the shell would interpret")
        );
        assert!(make_variable_problem("FILES", "/tmp/$(shell id)").is_some());
        assert!(make_variable_problem("ROOTFS_PARTSIZE", "1;x").is_some());
    }
}
