//! Package versions as opkg orders them (dpkg's algorithm: epoch, upstream version,
//! revision; digits compare as numbers, `~` sorts before everything) and the version
//! constraints of `Depends` entries (`>=`, `<=`, `=`, `>>`, `<<`, `>`, `<`). Pure.

use std::cmp::Ordering;

/// A comparison operator of a `Depends` entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    Equal,
    AtLeast,
    AtMost,
    Above,
    Below,
}

impl Op {
    /// Parses the operator at the start of `text`, returning it and the rest.
    pub(crate) fn split(text: &str) -> Option<(Op, &str)> {
        // Longest operators first: `>=` must not read as `>`.
        const OPS: [(&str, Op); 7] = [
            (">=", Op::AtLeast),
            ("<=", Op::AtMost),
            (">>", Op::Above),
            ("<<", Op::Below),
            ("=", Op::Equal),
            (">", Op::Above),
            ("<", Op::Below),
        ];
        OPS.iter()
            .find_map(|(symbol, op)| text.strip_prefix(symbol).map(|rest| (*op, rest)))
    }

    pub(crate) fn symbol(self) -> &'static str {
        match self {
            Op::Equal => "=",
            Op::AtLeast => ">=",
            Op::AtMost => "<=",
            Op::Above => ">>",
            Op::Below => "<<",
        }
    }

    /// Whether `version` satisfies `self wanted`.
    pub(crate) fn accepts(self, version: &str, wanted: &str) -> bool {
        let order = compare(version, wanted);
        match self {
            Op::Equal => order == Ordering::Equal,
            Op::AtLeast => order != Ordering::Less,
            Op::AtMost => order != Ordering::Greater,
            Op::Above => order == Ordering::Greater,
            Op::Below => order == Ordering::Less,
        }
    }
}

/// Orders two versions the way opkg does.
pub(crate) fn compare(a: &str, b: &str) -> Ordering {
    let (epoch_a, upstream_a, revision_a) = split(a);
    let (epoch_b, upstream_b, revision_b) = split(b);
    epoch_a
        .cmp(&epoch_b)
        .then_with(|| compare_part(upstream_a, upstream_b))
        .then_with(|| compare_part(revision_a, revision_b))
}

/// `[epoch:]upstream[-revision]`; the revision starts after the last `-`.
fn split(version: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match version.split_once(':') {
        Some((epoch, rest)) => (epoch.parse().unwrap_or(0), rest),
        None => (0, version),
    };
    match rest.rsplit_once('-') {
        Some((upstream, revision)) => (epoch, upstream, revision),
        None => (epoch, rest, ""),
    }
}

/// Sort weight of a non-digit character: `~` before the end, letters before other symbols.
fn weight(character: Option<u8>) -> i32 {
    match character {
        None => 0,
        Some(b'~') => -1,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`.
fn compare_part(a: &str, b: &str) -> Ordering {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let digit = |text: &[u8], at: usize| text.get(at).is_some_and(u8::is_ascii_digit);
    while i < a.len() || j < b.len() {
        while (i < a.len() && !digit(a, i)) || (j < b.len() && !digit(b, j)) {
            let (wa, wb) = (weight(a.get(i).copied()), weight(b.get(j).copied()));
            if wa != wb {
                return wa.cmp(&wb);
            }
            i += 1;
            j += 1;
        }
        while a.get(i) == Some(&b'0') {
            i += 1;
        }
        while b.get(j) == Some(&b'0') {
            j += 1;
        }
        let mut first_difference = Ordering::Equal;
        while digit(a, i) && digit(b, j) {
            if first_difference == Ordering::Equal {
                first_difference = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(a, i) {
            return Ordering::Greater;
        }
        if digit(b, j) {
            return Ordering::Less;
        }
        if first_difference != Ordering::Equal {
            return first_difference;
        }
    }
    Ordering::Equal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_order_like_dpkg() {
        let ascending = [
            "1.0~rc1",
            "1.0",
            "1.0-1",
            "1.0-2",
            "1.0-10",
            "1.0a",
            "1.2",
            "1.10",
            "2023-06-05",
            "2023-06-05-f787c97b-1",
            "1:0.1",
        ];
        for pair in ascending.windows(2) {
            assert_eq!(compare(pair[0], pair[1]), Ordering::Less, "{pair:?}");
            assert_eq!(compare(pair[1], pair[0]), Ordering::Greater, "{pair:?}");
        }
        assert_eq!(compare("1.36.1-1", "1.36.1-1"), Ordering::Equal);
        assert_eq!(compare("01.2", "1.2"), Ordering::Equal);
    }

    #[test]
    fn constraints_accept_what_they_say() {
        assert!(Op::AtLeast.accepts("2023-06-05-f787c97b-1", "2023-06-05"));
        assert!(!Op::Below.accepts("1.2", "1.2"));
        assert!(Op::Equal.accepts("5.15.162-1-abc", "5.15.162-1-abc"));
        assert_eq!(Op::split(">= 1"), Some((Op::AtLeast, " 1")));
        assert_eq!(Op::split(">1"), Some((Op::Above, "1")));
        assert_eq!(Op::split("~1"), None);
    }
}
