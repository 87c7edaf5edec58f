//! Gathers the desired state (fleet + lock + overlay digests) and the recorded state (redb)
//! for [`super::diff`]. Reads files and the state store; never the network.

/// Options of one `plan` run.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// A missing or outdated lock entry is an error (CI).
    pub locked: bool,
    /// Never touch the network; list what would be needed.
    pub offline: bool,
}

/// (Filled in once manifest/state/overlay land.)
pub fn compute() {}
