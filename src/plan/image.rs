//! Which of a build's artifacts a flash writes: the one of the kind a device asks for, and
//! among several of one kind, the one of the profile's filesystem. `plan` (the key of a flash
//! action), `apply` and `flash write PROFILE:KIND` all choose through [`choose_image`], so
//! they always agree. Pure: no I/O.

use crate::error::{Error, ErrorCode, Result};
use crate::state::ArtifactRef;

/// The one artifact of `kind`; among several (an ext4 and a squashfs `factory` image), the
/// one of the profile's `policies.filesystem`. Never a guess: still several is an error.
pub fn choose_image<'a>(
    artifacts: &'a [ArtifactRef],
    kind: &str,
    filesystem: Option<&str>,
) -> Result<&'a ArtifactRef> {
    let of_kind: Vec<&ArtifactRef> = artifacts.iter().filter(|a| a.kind == kind).collect();
    let of_filesystem: Vec<&ArtifactRef> = of_kind
        .iter()
        .copied()
        .filter(|artifact| filesystem.is_some() && artifact.filesystem.as_deref() == filesystem)
        .collect();
    let candidates = match (of_kind.len(), of_filesystem.len()) {
        (2.., 1..) => of_filesystem,
        _ => of_kind,
    };
    match candidates.as_slice() {
        [one] => Ok(one),
        [] => {
            let mut kinds: Vec<&str> = artifacts.iter().map(|a| a.kind.as_str()).collect();
            kinds.sort_unstable();
            kinds.dedup();
            Err(Error::new(
                ErrorCode::ArtifactNotFound,
                format!(
                    "the build has no `{kind}` image (it has: {})",
                    kinds.join(", ")
                ),
            ))
        }
        several => {
            let names: Vec<String> = several
                .iter()
                .map(|a| format!("{} ({})", a.name, short(&a.sha256)))
                .collect();
            Err(Error::new(
                ErrorCode::Validation,
                format!(
                    "the build has {} `{kind}` images: {}",
                    several.len(),
                    names.join(", ")
                ),
            ))
        }
    }
}

fn short(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}
