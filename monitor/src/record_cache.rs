//! The container records as last read, for attributing a seccomp record's pid to its
//! container: reread when stale, and at once when a process shows a cgroup no reading has
//! been checked against (a container started since the last one).

use crate::attribution::{attribute, Attribution, Workload};
use crate::cgroup::{is_within, read_proc_cgroup, ProcessCGroup};
use crate::seccomp_log::SeccompRecord;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use stockade_runtime::node_state::{self, ContainerRecord};

/// A record list older than this is reread before attributing.
const CACHE_MAX_AGE: Duration = Duration::from_secs(1);
/// A cgroup a reading did not name rereads the list only once it is this old.
const CACHE_MISS_AGE: Duration = Duration::from_millis(50);
/// How long a cgroup that no record named is remembered as such.
const MISS_MEMORY: Duration = CACHE_MAX_AGE;
/// Remembered misses beyond which the expired ones are forgotten.
const MISS_MEMORY_SIZE: usize = 4096;

pub struct RecordCache {
    dir: PathBuf,
    records: Vec<ContainerRecord>,
    loaded: Option<Instant>,
    /// Cgroups (a process's pathnames, one per line) that a reading made after their first
    /// record named no container, and when.
    misses: HashMap<String, Instant>,
    /// How often the directory was read.
    readings: u64,
}

impl RecordCache {
    pub fn new(dir: &Path) -> Self {
        RecordCache {
            dir: dir.to_path_buf(),
            records: Vec::new(),
            loaded: None,
            misses: HashMap::new(),
            readings: 0,
        }
    }

    fn refresh_if_older(&mut self, age: Duration) {
        if self.loaded.is_some_and(|t| t.elapsed() < age) {
            return;
        }
        self.refresh();
    }

    fn refresh(&mut self) {
        match node_state::list(&self.dir) {
            Ok(listing) => self.records = listing.records,
            Err(e) => tracing::warn!(error = %e, "cannot list container records"),
        }
        self.loaded = Some(Instant::now());
        self.readings += 1;
        tracing::trace!(
            readings = self.readings,
            records = self.records.len(),
            "container records read"
        );
    }

    /// Attributes a denial's process by its UID and, while it lives, its cgroups.
    pub fn attribute(&mut self, record: &SeccompRecord) -> Attribution {
        self.attribute_checked(record).0
    }

    /// [`RecordCache::attribute`], and whether the process's cgroup confirmed it (alive,
    /// inside that container's cgroup) rather than its UID alone.
    pub fn attribute_checked(&mut self, record: &SeccompRecord) -> (Attribution, bool) {
        let cgroups = read_proc_cgroup(record.pid).ok();
        self.attribute_in(record.uid, cgroups.as_deref())
    }

    /// An answer the cgroup does not confirm rereads the records first: a container
    /// started since the last reading would otherwise be taken for its pod's only known
    /// one. Its record is written before its process runs, so a cgroup no reading has been
    /// checked against rereads at once; whole containers run in less than the
    /// [`CACHE_MISS_AGE`] a known miss waits for.
    fn attribute_in(
        &mut self,
        uid: Option<u32>,
        cgroups: Option<&[ProcessCGroup]>,
    ) -> (Attribution, bool) {
        self.refresh_if_older(CACHE_MAX_AGE);
        let mut found = attribute(uid, cgroups, &self.records);
        let mut confirmed = self.confirms(&found, cgroups);
        if !confirmed {
            let key = cgroups.map(miss_key);
            match &key {
                Some(key) if !self.missed_recently(key) => self.refresh(),
                _ => self.refresh_if_older(CACHE_MISS_AGE),
            }
            found = attribute(uid, cgroups, &self.records);
            confirmed = self.confirms(&found, cgroups);
            if let (Some(key), false) = (key, confirmed) {
                self.remember_miss(key);
            }
        }
        (found, confirmed)
    }

    fn confirms(&self, found: &Attribution, cgroups: Option<&[ProcessCGroup]>) -> bool {
        let (Attribution::Container(w), Some(cgroups)) = (found, cgroups) else {
            return false;
        };
        self.records.iter().any(|r| {
            !r.cgroups_path.is_empty()
                && Workload::of(r) == *w
                && cgroups
                    .iter()
                    .any(|c| is_within(&c.pathname, &r.cgroups_path))
        })
    }

    fn missed_recently(&self, key: &str) -> bool {
        self.misses
            .get(key)
            .is_some_and(|at| at.elapsed() < MISS_MEMORY)
    }

    fn remember_miss(&mut self, key: String) {
        if self.misses.len() >= MISS_MEMORY_SIZE {
            self.misses.retain(|_, at| at.elapsed() < MISS_MEMORY);
            if self.misses.len() >= MISS_MEMORY_SIZE {
                self.misses.clear();
            }
        }
        self.misses.insert(key, Instant::now());
    }
}

fn miss_key(cgroups: &[ProcessCGroup]) -> String {
    cgroups
        .iter()
        .map(|c| c.pathname.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::parse_process_cgroups;
    use stockade_runtime::idrange::IdRange;
    use stockade_runtime::pod::PodIdentity;

    const POD: IdRange = IdRange {
        first: 1 << 30,
        size: 65536,
    };

    fn rec(id: &str) -> ContainerRecord {
        let pod = PodIdentity {
            sandbox_id: "sb".into(),
            is_sandbox: id == "sb",
            namespace: Some("ns".into()),
            pod_name: Some("pod".into()),
            container_name: Some(id.into()),
            image: None,
        };
        ContainerRecord::new(
            id,
            &pod,
            "default",
            &format!("/stockade/{id}"),
            1,
            Some(POD),
        )
    }

    fn cgroups_of(id: &str) -> Vec<ProcessCGroup> {
        parse_process_cgroups(&format!("4:pids:/stockade/{id}\n0::/\n")).unwrap()
    }

    fn container(found: &(Attribution, bool)) -> Option<&str> {
        match found {
            (Attribution::Container(w), true) => Some(&w.container),
            _ => None,
        }
    }

    #[test]
    fn a_container_started_since_the_last_reading_is_found_by_its_first_record() {
        let dir = tempfile::tempdir().unwrap();
        node_state::write(dir.path(), &rec("sb")).unwrap();
        let mut cache = RecordCache::new(dir.path());
        let uid = Some(POD.first);
        assert_eq!(
            container(&cache.attribute_in(uid, Some(&cgroups_of("sb")))),
            Some("sb")
        );
        // Moments later the pod's next container starts: its record, then its process.
        node_state::write(dir.path(), &rec("app")).unwrap();
        let found = cache.attribute_in(uid, Some(&cgroups_of("app")));
        assert_eq!(container(&found), Some("app"), "{found:?}");
        assert_eq!(cache.readings, 2);
        // Its next records need no reading.
        cache.attribute_in(uid, Some(&cgroups_of("app")));
        assert_eq!(cache.readings, 2);
    }

    #[test]
    fn a_cgroup_no_record_names_rereads_once_not_per_record() {
        let dir = tempfile::tempdir().unwrap();
        node_state::write(dir.path(), &rec("sb")).unwrap();
        let mut cache = RecordCache::new(dir.path());
        let foreign = parse_process_cgroups("0::/system.slice/sshd.service\n").unwrap();
        let started = Instant::now();
        for _ in 0..100 {
            assert_eq!(
                cache.attribute_in(Some(1000), Some(&foreign)),
                (Attribution::Foreign, false)
            );
        }
        // The first reading and the one the new cgroup made (the loop takes microseconds;
        // a stall past the miss age would earn one more, rightly).
        if started.elapsed() < CACHE_MISS_AGE {
            assert_eq!(cache.readings, 2);
        }
    }
}
