//! `imagegen.lock`: its file format ([`file`]) and the operation that pins upstream facts
//! into it ([`pin`]). Reading the file never touches the network; pinning reads signed
//! metadata through [`crate::imagebuilder::cache`].

mod file;
mod pin;

pub use file::{LOCK_FILE_NAME, LockEntry, LockFile};
pub use pin::{Change, LockChange, LockReport, Upgrade, entry_for, lock, pin_feeds};
