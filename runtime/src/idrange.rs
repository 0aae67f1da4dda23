//! Host ID ranges for user namespaces.
//!
//! CONTRACT: `IdRange` is used by the hardener (pure). The allocator that hands ranges out
//! per pod (persisted, locked) lives here too and belongs to the user-namespace work.
//!
//! Layers, so the arithmetic is testable without files:
//! - [`IdPool`]: a pool of host IDs cut into equal per-pod slots (pure).
//! - [`IdTable`]: the allocations of a node and the rules for adding, releasing and
//!   reclaiming them (pure, serializable).
//! - [`IdAllocator`]: the table persisted in a JSON state file, every operation under an
//!   exclusive `flock` and written atomically (temp file + fsync + rename + fsync of the
//!   directory), so concurrent shims and restarted ones never hand a range out twice.
//!
//! One state file serves every pool on the node (e.g. the `stockade` and `stockade-strict`
//! profiles): a new range never overlaps any recorded allocation, whatever pool it came from.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::profile::IdPoolSettings;

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

/// The process whose life keeps an allocation: its pid and its start time (field 22 of
/// /proc/PID/stat, clock ticks since boot), so a recycled pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: i32,
    pub start_time: u64,
}

impl Owner {
    /// The calling process.
    pub fn current() -> io::Result<Owner> {
        Owner::of(std::process::id() as i32)
    }

    pub fn of(pid: i32) -> io::Result<Owner> {
        Ok(Owner {
            pid,
            start_time: process_start_time(pid)?,
        })
    }

    /// The same process still exists (same pid, same start time).
    pub fn is_alive(&self) -> bool {
        matches!(process_start_time(self.pid), Ok(t) if t == self.start_time)
    }
}

/// Start time of a process; fails when there is no such process.
fn process_start_time(pid: i32) -> io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // comm (field 2) may contain spaces and parentheses: fields after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))?;
    // `rest` starts at field 3 (state); starttime is field 22.
    rest.split_whitespace()
        .nth(22 - 3)
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| io::Error::other("malformed /proc/PID/stat"))
}

/// Whether any process on the host runs with a real, effective, saved or filesystem UID
/// or GID inside `range`. Used before reclaiming: a pod whose shim died may still have
/// container processes running under its IDs, and handing the range out again would put
/// two pods under the same IDs.
pub fn range_in_use(range: &IdRange) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        // Cannot tell: assume in use, never hand out a range that might be live.
        return true;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        if !name.as_encoded_bytes().iter().all(u8::is_ascii_digit) {
            continue;
        }
        // Processes come and go during the scan: a vanished one is not in use.
        let Ok(status) = std::fs::read_to_string(entry.path().join("status")) else {
            continue;
        };
        let ids_in_range = status
            .lines()
            .filter(|l| l.starts_with("Uid:") || l.starts_with("Gid:"))
            .flat_map(|l| l.split_whitespace().skip(1))
            .filter_map(|id| id.parse::<u32>().ok())
            .any(|id| range.contains_id(id));
        if ids_in_range {
            return true;
        }
    }
    false
}

/// One pod's range and who holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub range: IdRange,
    /// None: kept until released explicitly.
    pub owner: Option<Owner>,
}

impl Allocation {
    /// Default liveness: the owner still runs, or some process still uses the range.
    /// Allocations without an owner are always live.
    pub fn is_live(&self) -> bool {
        match self.owner {
            None => true,
            Some(owner) => owner.is_alive() || range_in_use(&self.range),
        }
    }
}

/// The allocations of a node, keyed by pod id. Pure: no I/O.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdTable {
    allocations: BTreeMap<String, Allocation>,
}

impl IdTable {
    pub fn get(&self, pod_id: &str) -> Option<&Allocation> {
        self.allocations.get(pod_id)
    }

    pub fn len(&self) -> usize {
        self.allocations.len()
    }

    pub fn is_empty(&self) -> bool {
        self.allocations.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Allocation)> {
        self.allocations.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The pod's range: its existing one (the owner is updated to `owner`, so a restarted
    /// shim takes over its pod's range), or the lowest free slot of `pool` that overlaps
    /// no recorded allocation.
    pub fn allocate(
        &mut self,
        pool: &IdPool,
        pod_id: &str,
        owner: Option<Owner>,
    ) -> Result<IdRange, IdRangeError> {
        if pod_id.is_empty() {
            return Err(IdRangeError::EmptyPodId);
        }
        if let Some(existing) = self.allocations.get_mut(pod_id) {
            if owner.is_some() {
                existing.owner = owner;
            }
            return Ok(existing.range);
        }
        let range = self.first_free(pool).ok_or(IdRangeError::PoolFull {
            pool: *pool,
            slots: pool.slots(),
            ids_per_pod: pool.ids_per_pod(),
        })?;
        self.allocations
            .insert(pod_id.to_string(), Allocation { range, owner });
        Ok(range)
    }

    /// Lowest slot of `pool` that overlaps no allocation (of any pool).
    pub fn first_free(&self, pool: &IdPool) -> Option<IdRange> {
        let mut taken: Vec<IdRange> = self.allocations.values().map(|a| a.range).collect();
        taken.sort_by_key(|r| r.first);
        // Allocations never overlap, so sorted by start they are sorted by end too: one
        // sweep over slots and allocations together.
        let mut next = 0;
        for index in 0..pool.slots() {
            let slot = pool.slot(index);
            while next < taken.len() && taken[next].end() <= u64::from(slot.first) {
                next += 1;
            }
            let blocked = taken[next..]
                .iter()
                .take_while(|r| u64::from(r.first) < slot.end())
                .any(|r| r.overlaps(&slot));
            if !blocked {
                return Some(slot);
            }
        }
        None
    }

    pub fn release(&mut self, pod_id: &str) -> Option<Allocation> {
        self.allocations.remove(pod_id)
    }

    /// Drop every allocation `is_live` says is dead; returns what was dropped.
    pub fn reclaim(
        &mut self,
        mut is_live: impl FnMut(&str, &Allocation) -> bool,
    ) -> Vec<(String, IdRange)> {
        let dead: Vec<String> = self
            .allocations
            .iter()
            .filter(|(pod, a)| !is_live(pod, a))
            .map(|(pod, _)| pod.clone())
            .collect();
        dead.into_iter()
            .filter_map(|pod| self.allocations.remove(&pod).map(|a| (pod, a.range)))
            .collect()
    }

    /// Checks a table read from disk: valid ranges, none overlapping.
    pub fn validate(&self) -> Result<(), String> {
        let mut ranges: Vec<(&str, IdRange)> = self.iter().map(|(pod, a)| (pod, a.range)).collect();
        ranges.sort_by_key(|(_, r)| r.first);
        for (pod, r) in &ranges {
            if pod.is_empty() {
                return Err("an allocation has an empty pod id".into());
            }
            if !r.is_valid() {
                return Err(format!("pod {pod}: invalid range {r}"));
            }
        }
        for pair in ranges.windows(2) {
            if pair[0].1.overlaps(&pair[1].1) {
                return Err(format!(
                    "pods {} and {} have overlapping ranges {} and {}",
                    pair[0].0, pair[1].0, pair[0].1, pair[1].1
                ));
            }
        }
        Ok(())
    }
}

/// On-disk form of the state file.
#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    #[serde(flatten)]
    table: IdTable,
}

const STATE_VERSION: u32 = 1;

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
        if state.version != STATE_VERSION {
            return Err(corrupt(format!(
                "version {} (this build reads {STATE_VERSION})",
                state.version
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
    use proptest::prelude::*;

    fn pool(first_id: u32, slots: u32, ids_per_pod: u32) -> IdPool {
        IdPool::new(IdPoolSettings {
            first_id,
            size: slots * ids_per_pod,
            ids_per_pod,
        })
        .unwrap()
    }

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

    #[test]
    fn lowest_free_slot_first_and_idempotent() {
        let p = pool(100_000, 3, 10);
        let mut t = IdTable::default();
        let a = t.allocate(&p, "a", None).unwrap();
        let b = t.allocate(&p, "b", None).unwrap();
        assert_eq!(
            a,
            IdRange {
                first: 100_000,
                size: 10
            }
        );
        assert_eq!(
            b,
            IdRange {
                first: 100_010,
                size: 10
            }
        );
        assert_eq!(t.allocate(&p, "a", None).unwrap(), a);
        t.release("a");
        assert_eq!(t.allocate(&p, "c", None).unwrap(), a);
    }

    #[test]
    fn full_pool_names_the_pool() {
        let p = pool(100_000, 1, 10);
        let mut t = IdTable::default();
        t.allocate(&p, "a", None).unwrap();
        let err = t.allocate(&p, "b", None).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("host IDs 100000..100010"), "{msg}");
        assert!(msg.contains("full"), "{msg}");
    }

    #[test]
    fn a_second_pool_avoids_the_first_pools_ranges() {
        // Two profiles with different, overlapping pools share one state file.
        let wide = pool(100_000, 4, 20);
        let narrow = pool(100_000, 8, 10);
        let mut t = IdTable::default();
        let w = t.allocate(&wide, "w", None).unwrap();
        let n = t.allocate(&narrow, "n", None).unwrap();
        assert!(!w.overlaps(&n));
        assert_eq!(n.first, 100_020);
    }

    #[test]
    fn overlapping_tables_are_invalid() {
        let mut t = IdTable::default();
        for (pod, first) in [("a", 100), ("b", 105)] {
            t.allocations.insert(
                pod.into(),
                Allocation {
                    range: IdRange { first, size: 10 },
                    owner: None,
                },
            );
        }
        assert!(t.validate().unwrap_err().contains("overlapping"));
    }

    #[test]
    fn start_time_of_self_and_dead_pid() {
        let me = Owner::current().unwrap();
        assert!(me.is_alive());
        let stale = Owner {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(!stale.is_alive(), "a recycled pid must not look alive");
    }

    #[derive(Debug, Clone)]
    enum Op {
        Allocate(u8),
        Release(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..24).prop_map(Op::Allocate),
            (0u8..24).prop_map(Op::Release),
        ]
    }

    proptest! {
        #[test]
        fn ranges_disjoint_inside_pool_and_cycles_restore(
            first_id in 65_536u32..1_000_000,
            slots in 1u32..16,
            ids_per_pod in 1u32..100_000,
            ops in proptest::collection::vec(op(), 0..200),
        ) {
            let p = pool(first_id, slots, ids_per_pod);
            let mut t = IdTable::default();
            for op in &ops {
                match op {
                    Op::Allocate(pod) => {
                        let pod = format!("pod-{pod}");
                        let before = t.get(&pod).map(|a| a.range);
                        match t.allocate(&p, &pod, None) {
                            Ok(r) => {
                                if let Some(b) = before { prop_assert_eq!(b, r); }
                                prop_assert!(p.contains(&r));
                            }
                            Err(IdRangeError::PoolFull { .. }) => {
                                prop_assert_eq!(t.len() as u32, slots);
                            }
                            Err(e) => prop_assert!(false, "{e}"),
                        }
                    }
                    Op::Release(pod) => { t.release(&format!("pod-{pod}")); }
                }
                prop_assert!(t.validate().is_ok());
                prop_assert!(t.len() as u32 <= slots);
            }
            let pods: Vec<String> = t.iter().map(|(k, _)| k.to_string()).collect();
            for pod in pods { t.release(&pod); }
            prop_assert_eq!(&t, &IdTable::default());
            // An emptied pool hands out its first slot again.
            prop_assert_eq!(t.allocate(&p, "x", None).unwrap(), p.slot(0));
        }
    }
}
