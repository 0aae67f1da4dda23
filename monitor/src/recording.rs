//! A recording: the distinct syscalls each Stockade container made in record mode, from
//! the kernel's SECCOMP_RET_LOG records, and how complete it is. Pure (the reader and
//! the pid lookups live in [`crate::record_cache::RecordCache`] and the CLI).
//!
//! Complete means: no record was lost on the way (the socket never overflowed, the
//! kernel's audit `lost` counter did not move while recording) and every LOG record
//! could be attributed to one container. Otherwise the summary says by how much.

use crate::attribution::{Attribution, Workload};
use crate::audit_status::AuditStatus;
use crate::seccomp_log::{arch_name, SeccompRecord};
use std::collections::{BTreeMap, BTreeSet};

/// What one container was seen to do.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct ContainerRecording {
    /// Distinct syscalls per ABI (`x86_64`, `aarch64`, ...), the kernel's names.
    pub syscalls: BTreeMap<String, BTreeSet<String>>,
    /// LOG records attributed to it.
    pub records: u64,
    /// Syscalls the filter denied it (not part of its profile).
    pub denied: BTreeSet<String>,
}

/// Everything a recording saw.
#[derive(Debug, Clone, Default)]
pub struct Recording {
    pub containers: BTreeMap<Workload, ContainerRecording>,
    /// LOG records read in all.
    pub log_records: u64,
    /// LOG records of a Stockade pod whose container could not be told (the process was
    /// gone and its pod has several containers).
    pub unattributed: u64,
    /// Their syscalls by pod (`namespace/pod`, `unknown` where not even the pod is known):
    /// what a profile of that pod's containers may lack.
    pub unattributed_syscalls: BTreeMap<String, BTreeSet<String>>,
    /// LOG records of processes outside Stockade containers (ignored).
    pub foreign: u64,
    /// Times the record socket overflowed (each: at least one record lost).
    pub socket_overruns: u64,
    /// The kernel's audit status when the recording started and ended.
    pub audit_before: Option<AuditStatus>,
    pub audit_after: Option<AuditStatus>,
}

/// A recording's verdict on itself.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Completeness {
    pub complete: bool,
    /// Records the kernel dropped node-wide while recording (an upper bound for ours).
    pub kernel_lost: Option<u64>,
    pub socket_overruns: u64,
    pub unattributed: u64,
    /// Why it is not complete, in words.
    pub problems: Vec<String>,
}

impl Recording {
    /// Adds one record with its attribution.
    pub fn add(&mut self, record: &SeccompRecord, attribution: Attribution) {
        let is_log = record.code == libc::SECCOMP_RET_LOG;
        if is_log {
            self.log_records += 1;
        }
        let workload = match attribution {
            Attribution::Container(w) => w,
            Attribution::Pod(w) => {
                if is_log {
                    self.unattributed(format!("{}/{}", w.namespace, w.pod), record);
                }
                return;
            }
            Attribution::Gone => {
                if is_log {
                    self.unattributed(crate::attribution::UNKNOWN.into(), record);
                }
                return;
            }
            Attribution::Foreign => {
                if is_log {
                    self.foreign += 1;
                }
                return;
            }
        };
        let container = self.containers.entry(workload).or_default();
        if is_log {
            container.records += 1;
            container
                .syscalls
                .entry(arch_name(record.arch))
                .or_default()
                .insert(record.syscall_name());
        } else if record.is_denial() {
            container.denied.insert(record.syscall_name());
        }
    }

    fn unattributed(&mut self, pod: String, record: &SeccompRecord) {
        self.unattributed += 1;
        self.unattributed_syscalls
            .entry(pod)
            .or_default()
            .insert(record.syscall_name());
    }

    pub fn completeness(&self) -> Completeness {
        let mut problems = Vec::new();
        let kernel_lost = match (&self.audit_before, &self.audit_after) {
            (Some(before), Some(after)) => Some(u64::from(after.lost.wrapping_sub(before.lost))),
            _ => None,
        };
        match kernel_lost {
            Some(0) => {}
            Some(n) => problems.push(format!(
                "the kernel dropped {n} audit records node-wide while recording (audit lost \
                 counter; backlog limit {}, rate limit {})",
                self.audit_after.map_or(0, |a| a.backlog_limit),
                self.audit_after.map_or(0, |a| a.rate_limit)
            )),
            None => problems.push(
                "the kernel's audit lost counter could not be read (AUDIT_GET): losses \
                 in the kernel are unknown"
                    .into(),
            ),
        }
        if self.socket_overruns > 0 {
            problems.push(format!(
                "the record socket overflowed {} times (records lost, at least one each)",
                self.socket_overruns
            ));
        }
        if self.unattributed > 0 {
            let by_pod: Vec<String> = self
                .unattributed_syscalls
                .iter()
                .map(|(pod, calls)| {
                    format!(
                        "{pod}: {}",
                        calls.iter().cloned().collect::<Vec<_>>().join(" ")
                    )
                })
                .collect();
            problems.push(format!(
                "{} records of Stockade pods could not be attributed to a container (their \
                 processes exited before they were read); their syscalls: {}",
                self.unattributed,
                by_pod.join("; ")
            ));
        }
        Completeness {
            complete: problems.is_empty(),
            kernel_lost,
            socket_overruns: self.socket_overruns,
            unattributed: self.unattributed,
            problems,
        }
    }
}

/// What earlier records taught about whose processes a host UID runs: the pod's host
/// range outlives its processes, so a record read after its process exited (and, under
/// `ctr run --rm`, after its container record was deleted) is still placed where that
/// UID's live processes were seen.
#[derive(Debug, Default)]
pub struct UidMemory {
    seen: BTreeMap<u32, BTreeSet<Workload>>,
}

impl UidMemory {
    /// A record whose process's cgroup named container `w`.
    pub fn learn(&mut self, uid: Option<u32>, w: &Workload) {
        if let Some(uid) = uid {
            self.seen.entry(uid).or_default().insert(w.clone());
        }
    }

    /// An attribution the cgroup did not confirm: the one container the UID was seen in,
    /// if it was seen in exactly one; foreign when the UID lies outside Stockade's ID pool
    /// `pool` (first, size); else the lookup's own answer.
    pub fn fallback(&self, uid: Option<u32>, found: Attribution, pool: (u32, u32)) -> Attribution {
        let Some(uid) = uid else {
            return found;
        };
        if let Some(seen) = self.seen.get(&uid) {
            let mut pods = seen.iter().map(|w| (&w.namespace, &w.pod));
            match (seen.len(), pods.next()) {
                (1, _) => {
                    if let Some(w) = seen.iter().next() {
                        return Attribution::Container(w.clone());
                    }
                }
                (_, Some(first)) if pods.all(|p| p == first) => {
                    return Attribution::Pod(Workload {
                        namespace: first.0.clone(),
                        pod: first.1.clone(),
                        container: crate::attribution::UNKNOWN.into(),
                    });
                }
                _ => {}
            }
        }
        let in_pool = uid >= pool.0 && u64::from(uid) < u64::from(pool.0) + u64::from(pool.1);
        match found {
            Attribution::Gone if !in_pool => Attribution::Foreign,
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(syscall: i64, code: u32) -> SeccompRecord {
        SeccompRecord {
            pid: 7,
            uid: Some(1 << 30),
            arch: 0xC000_003E,
            syscall,
            code,
            comm: None,
        }
    }

    fn workload(c: &str) -> Workload {
        Workload {
            namespace: "ns".into(),
            pod: "p".into(),
            container: c.into(),
        }
    }

    fn status(lost: u32) -> AuditStatus {
        AuditStatus {
            lost,
            backlog_limit: 64,
            rate_limit: 0,
            auditd_pid: 0,
        }
    }

    #[test]
    fn distinct_syscalls_per_container_and_denials_apart() {
        let mut r = Recording::default();
        let log = libc::SECCOMP_RET_LOG;
        r.add(&record(0, log), Attribution::Container(workload("a")));
        r.add(&record(0, log), Attribution::Container(workload("a")));
        r.add(&record(110, log), Attribution::Container(workload("a")));
        r.add(&record(1, log), Attribution::Container(workload("b")));
        r.add(
            &record(170, libc::SECCOMP_RET_ERRNO),
            Attribution::Container(workload("a")),
        );
        r.add(&record(2, log), Attribution::Foreign);
        let a = &r.containers[&workload("a")];
        assert_eq!(a.records, 3);
        assert_eq!(
            a.syscalls["x86_64"].iter().collect::<Vec<_>>(),
            ["getppid", "read"]
        );
        assert_eq!(a.denied.iter().collect::<Vec<_>>(), ["sethostname"]);
        assert_eq!(r.containers[&workload("b")].syscalls["x86_64"].len(), 1);
        assert_eq!((r.log_records, r.foreign), (5, 1));
        r.audit_before = Some(status(3));
        r.audit_after = Some(status(3));
        assert!(r.completeness().complete, "{:?}", r.completeness());
    }

    #[test]
    fn a_uid_remembers_its_container_and_strangers_are_foreign() {
        let pool = (1 << 30, 1 << 26);
        let mut m = UidMemory::default();
        let ours = Some(1 << 30);
        m.learn(ours, &workload("a"));
        let a = Attribution::Container(workload("a"));
        // Its process gone, its container record deleted: still `a`.
        assert_eq!(m.fallback(ours, Attribution::Gone, pool), a);
        // A UID of the pool never seen alive stays unattributed; outside the pool foreign.
        let stranger = Some((1 << 30) + 65_536);
        assert_eq!(
            m.fallback(stranger, Attribution::Gone, pool),
            Attribution::Gone
        );
        assert_eq!(
            m.fallback(Some(1000), Attribution::Gone, pool),
            Attribution::Foreign
        );
        // Two containers under one UID (a pod): its pod, no guessing which container.
        m.learn(ours, &workload("b"));
        let pod = Attribution::Pod(workload("unknown"));
        assert_eq!(m.fallback(ours, Attribution::Gone, pool), pod);
    }

    #[test]
    fn losses_and_unattributed_records_make_it_incomplete() {
        let mut r = Recording::default();
        r.add(&record(0, libc::SECCOMP_RET_LOG), Attribution::Gone);
        r.socket_overruns = 2;
        r.audit_before = Some(status(10));
        r.audit_after = Some(status(15));
        let c = r.completeness();
        assert!(!c.complete);
        assert_eq!(c.kernel_lost, Some(5));
        assert_eq!((c.unattributed, c.socket_overruns), (1, 2));
        assert_eq!(c.problems.len(), 3, "{:?}", c.problems);
        assert!(c.problems[2].ends_with("unknown: read"), "{:?}", c.problems);
        r.audit_after = None;
        assert!(r.completeness().problems[0].contains("could not be read"));
    }
}
