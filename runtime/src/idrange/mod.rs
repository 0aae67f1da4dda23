//! Host ID ranges for user namespaces.
//!
//! CONTRACT: `IdRange` is used by the hardener (pure). The allocator that hands ranges out
//! per pod (persisted, locked) lives here too and belongs to the user-namespace work.
//!
//! Layers, so the arithmetic is testable without files:
//! - [`IdPool`]: a pool of host IDs cut into equal per-pod slots (pure).
//! - [`IdTable`]: the allocations of a node and the rules for adding, releasing and
//!   reclaiming them (pure, serializable); released ranges are reused last
//!   ([`REUSE_POLICY`]).
//! - [`IdAllocator`]: the table persisted in a JSON state file, every operation under an
//!   exclusive `flock` and written atomically (temp file + fsync + rename + fsync of the
//!   directory), so concurrent shims and restarted ones never hand a range out twice.
//!
//! One state file serves every pool on the node (e.g. the `stockade` and `stockade-strict`
//! profiles): a new range never overlaps any recorded allocation, whatever pool it came from.

mod allocator;
mod owner;
mod table;

use std::fmt;
use std::io;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::profile::IdPoolSettings;

pub use allocator::IdAllocator;
pub use owner::{range_in_use, Owner};
pub use table::{Allocation, IdTable, REUSE_POLICY};

/// A contiguous range of host IDs; container ID 0 maps to `first`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    /// First host UID/GID of the range (container root).
    pub first: u32,
    /// Number of IDs in the range.
    pub size: u32,
}

impl IdRange {
    /// One past the last host ID (u64: a range may end at 2^32).
    pub fn end(&self) -> u64 {
        u64::from(self.first) + u64::from(self.size)
    }

    pub fn overlaps(&self, other: &IdRange) -> bool {
        u64::from(self.first) < other.end() && u64::from(other.first) < self.end()
    }

    pub fn contains_id(&self, id: u32) -> bool {
        id >= self.first && u64::from(id) < self.end()
    }

    /// Usable as a user-namespace mapping: non-empty and below the kernel's "no ID"
    /// (u32::MAX).
    pub fn is_valid(&self) -> bool {
        self.size > 0 && self.end() <= u64::from(u32::MAX)
    }
}

impl fmt::Display for IdRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}..{}", self.first, self.end())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdRangeError {
    #[error(
        "ID pool {pool} is full: all {slots} ranges of {ids_per_pod} IDs are held by live pods"
    )]
    PoolFull {
        pool: IdPool,
        slots: u32,
        ids_per_pod: u32,
    },
    #[error(
        "invalid ID pool (first_id {first_id}, size {size}, ids_per_pod {ids_per_pod}): {problem}"
    )]
    InvalidPool {
        first_id: u32,
        size: u32,
        ids_per_pod: u32,
        problem: &'static str,
    },
    #[error("pod id must not be empty")]
    EmptyPodId,
    #[error("ID range state {path}: {op}: {source}")]
    Io {
        path: PathBuf,
        op: &'static str,
        source: io::Error,
    },
    #[error(
        "ID range state {path} is corrupt ({problem}); refusing to guess which ranges are in use"
    )]
    Corrupt { path: PathBuf, problem: String },
}

/// A pool of host IDs cut into `size / ids_per_pod` equal slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdPool {
    first_id: u32,
    size: u32,
    ids_per_pod: u32,
}

impl IdPool {
    pub fn new(settings: IdPoolSettings) -> Result<IdPool, IdRangeError> {
        let IdPoolSettings {
            first_id,
            size,
            ids_per_pod,
        } = settings;
        let invalid = |problem| IdRangeError::InvalidPool {
            first_id,
            size,
            ids_per_pod,
            problem,
        };
        if ids_per_pod == 0 {
            return Err(invalid("ids_per_pod must not be 0"));
        }
        if size < ids_per_pod {
            return Err(invalid("size is smaller than ids_per_pod"));
        }
        if u64::from(first_id) + u64::from(size) > u64::from(u32::MAX) {
            return Err(invalid("the pool passes the largest host ID"));
        }
        Ok(IdPool {
            first_id,
            size,
            ids_per_pod,
        })
    }

    /// How many pods fit.
    pub fn slots(&self) -> u32 {
        self.size / self.ids_per_pod
    }

    pub fn ids_per_pod(&self) -> u32 {
        self.ids_per_pod
    }

    /// The range of slot `index` (`index < slots()`).
    pub fn slot(&self, index: u32) -> IdRange {
        IdRange {
            first: self.first_id + index * self.ids_per_pod,
            size: self.ids_per_pod,
        }
    }

    /// Whether `range` lies entirely inside the pool.
    pub fn contains(&self, range: &IdRange) -> bool {
        range.first >= self.first_id
            && range.end() <= u64::from(self.first_id) + u64::from(self.size)
    }
}

impl fmt::Display for IdPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host IDs {}..{} ({} per pod)",
            self.first_id,
            u64::from(self.first_id) + u64::from(self.size),
            self.ids_per_pod
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_pools_are_refused() {
        let bad = [(100_000, 10, 0), (100_000, 10, 20), (u32::MAX - 5, 10, 10)];
        for (first_id, size, ids_per_pod) in bad {
            let r = IdPool::new(IdPoolSettings {
                first_id,
                size,
                ids_per_pod,
            });
            assert!(matches!(r, Err(IdRangeError::InvalidPool { .. })), "{r:?}");
        }
    }
}
