//! The filesystem policy, applied by editing the slot's `.config`: the Image Builder ignores
//! `CONFIG_*` on the make command line (reference §5.1), so the only way to choose the root
//! filesystem is the file. Text in, text out; the caller writes the slot's private copy.

use crate::error::{Error, ErrorCode, Result};

/// Root filesystem choices and their `.config` symbols. `targz` (the rootfs tarball) and
/// `initramfs` are extra outputs, not alternatives, so the policy never touches them.
const FILESYSTEMS: &[(&str, &str)] = &[
    ("squashfs", "CONFIG_TARGET_ROOTFS_SQUASHFS"),
    ("ext4", "CONFIG_TARGET_ROOTFS_EXT4FS"),
    ("ubifs", "CONFIG_TARGET_ROOTFS_UBIFS"),
    ("jffs2", "CONFIG_TARGET_ROOTFS_JFFS2"),
    ("jffs2-nand", "CONFIG_TARGET_ROOTFS_JFFS2_NAND"),
    ("erofs", "CONFIG_TARGET_ROOTFS_EROFS"),
];

/// The filesystem names the policy accepts.
pub fn known_filesystems() -> impl Iterator<Item = &'static str> {
    FILESYSTEMS.iter().map(|(name, _)| *name)
}

/// Returns `config` with `filesystem` enabled and every other root filesystem disabled.
/// A filesystem whose symbol the `.config` does not mention is not offered by the target
/// (Kconfig writes every visible symbol), which is an error rather than a silent no-op.
pub fn apply_filesystem_policy(config: &str, filesystem: &str, target: &str) -> Result<String> {
    let Some((_, wanted)) = FILESYSTEMS.iter().find(|(name, _)| *name == filesystem) else {
        let known: Vec<&str> = known_filesystems().collect();
        return Err(Error::new(
            ErrorCode::Validation,
            format!("unknown filesystem `{filesystem}`"),
        )
        .with_help(format!("use one of: {}", known.join(", "))));
    };
    if !config.lines().any(|line| symbol_of(line) == Some(wanted)) {
        return Err(Error::new(
            ErrorCode::Precondition,
            format!("filesystem `{filesystem}` is not available for {target}"),
        )
        .with_help(format!(
            "the Image Builder's `.config` has no `{wanted}`; choose a filesystem the target offers"
        )));
    }
    let mut edited = String::with_capacity(config.len());
    for line in config.lines() {
        match symbol_of(line) {
            Some(symbol) if symbol == *wanted => edited.push_str(&format!("{symbol}=y")),
            Some(symbol) if FILESYSTEMS.iter().any(|(_, known)| *known == symbol) => {
                edited.push_str(&format!("# {symbol} is not set"))
            }
            _ => edited.push_str(line),
        }
        edited.push('\n');
    }
    Ok(edited)
}

/// The symbol a `.config` line sets: `CONFIG_X=...` or `# CONFIG_X is not set`.
fn symbol_of(line: &str) -> Option<&str> {
    let line = line.trim();
    if let Some(rest) = line.strip_prefix("# ") {
        return rest
            .strip_suffix(" is not set")
            .filter(|symbol| symbol.starts_with("CONFIG_"));
    }
    let (symbol, _) = line.split_once('=')?;
    symbol.starts_with("CONFIG_").then_some(symbol)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = "CONFIG_TARGET_x86=y\n\
        CONFIG_TARGET_ROOTFS_EXT4FS=y\n\
        CONFIG_TARGET_EXT4_RESERVED_PCT=0\n\
        # CONFIG_TARGET_ROOTFS_JFFS2 is not set\n\
        CONFIG_TARGET_ROOTFS_SQUASHFS=y\n\
        CONFIG_TARGET_ROOTFS_TARGZ=y\n\
        CONFIG_TARGET_ROOTFS_PARTSIZE=104\n";

    #[test]
    fn chosen_filesystem_is_the_only_one_enabled() {
        let edited = apply_filesystem_policy(CONFIG, "squashfs", "x86/64").unwrap();
        assert_eq!(
            edited,
            "CONFIG_TARGET_x86=y\n\
             # CONFIG_TARGET_ROOTFS_EXT4FS is not set\n\
             CONFIG_TARGET_EXT4_RESERVED_PCT=0\n\
             # CONFIG_TARGET_ROOTFS_JFFS2 is not set\n\
             CONFIG_TARGET_ROOTFS_SQUASHFS=y\n\
             CONFIG_TARGET_ROOTFS_TARGZ=y\n\
             CONFIG_TARGET_ROOTFS_PARTSIZE=104\n"
        );
    }

    #[test]
    fn a_disabled_filesystem_can_be_enabled() {
        let edited = apply_filesystem_policy(CONFIG, "jffs2", "x86/64").unwrap();
        assert!(edited.contains("\nCONFIG_TARGET_ROOTFS_JFFS2=y\n"));
        assert!(edited.contains("# CONFIG_TARGET_ROOTFS_SQUASHFS is not set"));
        assert!(edited.contains("# CONFIG_TARGET_ROOTFS_EXT4FS is not set"));
    }

    #[test]
    fn unavailable_and_unknown_filesystems_are_errors() {
        let error = apply_filesystem_policy(CONFIG, "ubifs", "x86/64").unwrap_err();
        assert_eq!(error.code, ErrorCode::Precondition);
        assert_eq!(
            error.message,
            "filesystem `ubifs` is not available for x86/64"
        );
        let error = apply_filesystem_policy(CONFIG, "btrfs", "x86/64").unwrap_err();
        assert_eq!(error.code, ErrorCode::Validation);
    }
}
