//! Host ID ranges for user namespaces.
//!
//! CONTRACT: `IdRange` is used by the hardener (pure). The allocator that hands ranges out
//! per pod (persisted, locked) lives here too and belongs to the user-namespace work.

use serde::{Deserialize, Serialize};

/// A contiguous range of host IDs; container ID 0 maps to `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    /// First host UID/GID of the range (container root).
    pub first: u32,
    /// Number of IDs in the range.
    pub size: u32,
}
