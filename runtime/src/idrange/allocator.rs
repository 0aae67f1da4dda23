//! The per-node allocator: an [`IdTable`] persisted in a JSON state file, every operation
//! under an exclusive `flock` and written atomically.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::{Allocation, IdPool, IdRange, IdRangeError, IdTable, Owner};
use crate::profile::IdPoolSettings;

/// On-disk form of the state file.
#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    #[serde(flatten)]
    table: IdTable,
}

/// Version 2 added the quarantine (`released`); version 1 files (allocations only) are
/// read as a table with an empty quarantine and written back as version 2.
const STATE_VERSION: u32 = 2;
const READABLE_VERSIONS: std::ops::RangeInclusive<u32> = 1..=STATE_VERSION;

/// The per-node allocator: an [`IdTable`] persisted in a state file.
///
/// Every call takes an exclusive `flock` on `<state>.lock` (not on the state file, which
/// is replaced by rename), reads the table, changes it and writes it back atomically.
#[derive(Debug, Clone)]
pub struct IdAllocator {
    path: PathBuf,
    lock_path: PathBuf,
    pool: IdPool,
    owner: Option<Owner>,
}

impl IdAllocator {
    /// An allocator for `pool` on the state file `path` (created on first write, its
    /// directory with mode 0700). New allocations are owned by the calling process.
    pub fn open(
        path: impl Into<PathBuf>,
        pool: IdPoolSettings,
    ) -> Result<IdAllocator, IdRangeError> {
        let path = path.into();
        let pool = IdPool::new(pool)?;
        let owner = Owner::current().map_err(|source| IdRangeError::Io {
            path: PathBuf::from("/proc/self/stat"),
            op: "reading own start time",
            source,
        })?;
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        Ok(IdAllocator {
            path,
            lock_path: lock_path.into(),
            pool,
            owner: Some(owner),
        })
    }

    /// Record `owner` (e.g. the pod's shim when a helper allocates for it; None: only an
    /// explicit release frees the range) with new allocations.
    pub fn with_owner(mut self, owner: Option<Owner>) -> IdAllocator {
        self.owner = owner;
        self
    }

    pub fn pool(&self) -> &IdPool {
        &self.pool
    }

    pub fn state_file(&self) -> &Path {
        &self.path
    }

    /// The pod's range: its existing one, or a new one. When the pool is full, ranges of
    /// dead pods ([`Allocation::is_live`]) are reclaimed first.
    pub fn allocate(&self, pod_id: &str) -> Result<IdRange, IdRangeError> {
        self.update(|table| {
            match table.allocate(&self.pool, pod_id, self.owner) {
                Err(IdRangeError::PoolFull { .. }) => {}
                other => return other,
            }
            let reclaimed = table.reclaim(|_, a| a.is_live());
            for (pod, range) in &reclaimed {
                tracing::info!(pod = %pod, range = %range, "reclaimed ID range of a dead pod");
            }
            table.allocate(&self.pool, pod_id, self.owner)
        })
        .inspect(|range| tracing::debug!(pod = %pod_id, range = %range, "ID range allocated"))
    }

    /// Free the pod's range; returns it, or None if the pod had none.
    pub fn release(&self, pod_id: &str) -> Result<Option<IdRange>, IdRangeError> {
        let released = self.update(|table| Ok(table.release(pod_id).map(|a| a.range)))?;
        if let Some(range) = released {
            tracing::debug!(pod = %pod_id, range = %range, "ID range released");
        }
        Ok(released)
    }

    /// The pod's range, if it has one.
    pub fn get(&self, pod_id: &str) -> Result<Option<IdRange>, IdRangeError> {
        Ok(self.table()?.get(pod_id).map(|a| a.range))
    }

    /// Free the ranges of dead pods ([`Allocation::is_live`]).
    pub fn reclaim(&self) -> Result<Vec<(String, IdRange)>, IdRangeError> {
        self.reclaim_with(|_, a| a.is_live())
    }

    /// Free every allocation `is_live(pod_id, allocation)` says is dead (e.g. pods
    /// containerd no longer knows).
    pub fn reclaim_with(
        &self,
        is_live: impl FnMut(&str, &Allocation) -> bool,
    ) -> Result<Vec<(String, IdRange)>, IdRangeError> {
        self.update(|table| Ok(table.reclaim(is_live)))
    }

    /// A consistent copy of the whole table.
    pub fn table(&self) -> Result<IdTable, IdRangeError> {
        let _lock = self.lock()?;
        self.read()
    }

    /// Lock, read, change, write back (only when the table changed), unlock.
    fn update<T>(
        &self,
        change: impl FnOnce(&mut IdTable) -> Result<T, IdRangeError>,
    ) -> Result<T, IdRangeError> {
        let _lock = self.lock()?;
        let mut table = self.read()?;
        let before = table.clone();
        let result = change(&mut table)?;
        if table != before {
            self.write(&table)?;
        }
        Ok(result)
    }

    fn io(&self, op: &'static str) -> impl FnOnce(io::Error) -> IdRangeError + '_ {
        move |source| IdRangeError::Io {
            path: self.path.clone(),
            op,
            source,
        }
    }

    fn lock(&self) -> Result<Flock<File>, IdRangeError> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(self.io("creating the state directory"))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.lock_path)
            .map_err(self.io("opening the lock file"))?;
        Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| self.io("locking")(io::Error::from(errno)))
    }

    fn read(&self) -> Result<IdTable, IdRangeError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(text) => text,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(IdTable::default()),
            Err(e) => return Err(self.io("reading")(e)),
        };
        let corrupt = |problem: String| IdRangeError::Corrupt {
            path: self.path.clone(),
            problem,
        };
        let state: StateFile = serde_json::from_str(&text).map_err(|e| corrupt(e.to_string()))?;
        if !READABLE_VERSIONS.contains(&state.version) {
            return Err(corrupt(format!(
                "version {} (this build reads {} to {})",
                state.version,
                READABLE_VERSIONS.start(),
                READABLE_VERSIONS.end()
            )));
        }
        state.table.validate().map_err(corrupt)?;
        Ok(state.table)
    }

    /// Temp file, fsync, rename over the state file, fsync the directory: a crash leaves
    /// either the old or the new table, never a torn one.
    fn write(&self, table: &IdTable) -> Result<(), IdRangeError> {
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let state = StateFile {
            version: STATE_VERSION,
            table: table.clone(),
        };
        let text = serde_json::to_vec_pretty(&state)
            .map_err(|e| self.io("serializing")(io::Error::other(e)))?;
        let written = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(self.io("creating the temp file"))
            .and_then(|mut file| {
                file.write_all(&text)
                    .and_then(|()| file.sync_all())
                    .map_err(self.io("writing the temp file"))
            })
            .and_then(|()| {
                std::fs::rename(&tmp, &self.path).map_err(self.io("renaming the temp file"))
            });
        if let Err(e) = written {
            // A full disk must not leave a half-written table behind.
            let _ = std::fs::remove_file(&tmp);
            return Err(e);
        }
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(self.io("syncing the state directory"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POOL: IdPoolSettings = IdPoolSettings {
        first_id: 100_000,
        size: 30,
        ids_per_pod: 10,
    };

    #[test]
    fn a_version_1_file_is_migrated_with_an_empty_quarantine() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id-ranges.json");
        std::fs::write(
            &path,
            r#"{"version": 1, "allocations": {"old": {"range": {"first": 100000, "size": 10}, "owner": null}}}"#,
        )
        .unwrap();
        let alloc = IdAllocator::open(&path, POOL).unwrap();
        assert_eq!(alloc.get("old").unwrap().map(|r| r.first), Some(100_000));
        assert_eq!(
            alloc.release("old").unwrap().map(|r| r.first),
            Some(100_000)
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let state: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(state["version"], 2, "{text}");
        assert_eq!(state["released"][0]["first"], 100_000, "{text}");
        // The quarantine survives the round trip through the file.
        assert_eq!(alloc.allocate("new").unwrap().first, 100_010);
    }

    #[test]
    fn unknown_versions_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id-ranges.json");
        std::fs::write(&path, r#"{"version": 3, "allocations": {}}"#).unwrap();
        let e = IdAllocator::open(&path, POOL).unwrap().table().unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("version 3 (this build reads 1 to 2)"), "{msg}");
        assert!(msg.contains("id-ranges.json"), "{msg}");
    }
}
