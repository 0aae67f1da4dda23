//! Which pod and container a process belongs to: pid -> /proc/PID/cgroup -> the
//! [`ContainerRecord`] whose cgroupsPath holds it.

use crate::cgroup::{is_within, ProcessCGroup};
use stockade_runtime::node_state::ContainerRecord;

/// The label value for what cannot be known.
pub const UNKNOWN: &str = "unknown";

/// Kubernetes names of a container, as metric labels.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

impl Workload {
    pub fn of(record: &ContainerRecord) -> Workload {
        Workload {
            namespace: record.namespace.clone().unwrap_or_default(),
            pod: record
                .pod
                .clone()
                .unwrap_or_else(|| record.sandbox_id.clone()),
            container: record
                .container
                .clone()
                .unwrap_or_else(|| record.id.clone()),
        }
    }

    pub fn unknown() -> Workload {
        Workload {
            namespace: UNKNOWN.into(),
            pod: UNKNOWN.into(),
            container: UNKNOWN.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attribution {
    /// In a container we know.
    Container(Workload),
    /// In a Stockade pod's cgroup but no known container (it was deleted meanwhile):
    /// container is `unknown`.
    Pod(Workload),
    /// The process is gone and its UID is no pod's: everything `unknown`.
    Gone,
    /// Not a Stockade container (another runtime, a system service).
    Foreign,
}

/// Attributes a denied syscall's process from its host UID (in the audit record) and,
/// when it is still alive and visible, its cgroups.
///
/// The UID names the pod: each Stockade pod has its own host ID range, so the UID still
/// says whose process it was after the process exited, and when this exporter cannot read
/// the pid (another PID namespace). The cgroup names the container: Stockade lays cgroups
/// out as `<parent>/<sandbox-id>/<container-id>`, so a process below the parent directory of
/// a record's cgroupsPath belongs to that record's pod.
pub fn attribute(
    uid: Option<u32>,
    cgroups: Option<&[ProcessCGroup]>,
    records: &[ContainerRecord],
) -> Attribution {
    let by_uid: Vec<&ContainerRecord> = match uid {
        Some(uid) => records
            .iter()
            .filter(|r| r.host_ids.is_some_and(|ids| ids.contains_id(uid)))
            .collect(),
        None => Vec::new(),
    };
    // A cgroup that disagrees with the UID's pod is not trusted over it.
    let candidates: Vec<&ContainerRecord> = if by_uid.is_empty() {
        records.iter().collect()
    } else {
        by_uid.clone()
    };
    if let Some(found) = cgroups.and_then(|cgroups| by_cgroup(cgroups, &candidates)) {
        return found;
    }
    match by_uid.as_slice() {
        [] if cgroups.is_some() => Attribution::Foreign,
        [] => Attribution::Gone,
        [only] => Attribution::Container(Workload::of(only)),
        [first, ..] => Attribution::Pod(Workload {
            container: UNKNOWN.into(),
            ..Workload::of(first)
        }),
    }
}

fn by_cgroup(cgroups: &[ProcessCGroup], records: &[&ContainerRecord]) -> Option<Attribution> {
    // The deepest (most specific) match wins, should cgroupsPaths nest.
    let best = records
        .iter()
        .filter(|r| !r.cgroups_path.is_empty())
        .filter(|r| {
            cgroups
                .iter()
                .any(|c| is_within(&c.pathname, &r.cgroups_path))
        })
        .max_by_key(|r| r.cgroups_path.len());
    if let Some(record) = best {
        return Some(Attribution::Container(Workload::of(record)));
    }
    records
        .iter()
        .find(|r| pod_dir(r).is_some_and(|dir| cgroups.iter().any(|c| is_within(&c.pathname, dir))))
        .map(|record| {
            Attribution::Pod(Workload {
                container: UNKNOWN.into(),
                ..Workload::of(record)
            })
        })
}

/// The pod's cgroup directory, when the record's path follows `<...>/<sandbox-id>/<id>`.
fn pod_dir(record: &ContainerRecord) -> Option<&str> {
    let (dir, _) = record.cgroups_path.trim_end_matches('/').rsplit_once('/')?;
    (dir.rsplit('/').next() == Some(record.sandbox_id.as_str())).then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::parse_process_cgroups;
    use stockade_runtime::idrange::IdRange;

    fn rec(id: &str, sandbox: &str, path: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            sandbox_id: sandbox.into(),
            namespace: Some("ns".into()),
            pod: Some(format!("pod-{sandbox}")),
            container: Some(format!("ctr-{id}")),
            profile: "default".into(),
            cgroups_path: path.into(),
            init_pid: 1,
            created_unix_ms: 0,
            start_latency_ms: None,
            host_ids: None,
        }
    }

    fn records() -> Vec<ContainerRecord> {
        vec![
            rec("sb", "sb", "/stockade/sb/sb"),
            rec("c1", "sb", "/stockade/sb/c1"),
            rec("x", "other", "/elsewhere/x"),
        ]
    }

    const POD_SB: IdRange = IdRange {
        first: 1 << 30,
        size: 65536,
    };
    const POD_OTHER: IdRange = IdRange {
        first: (1 << 30) + 65536,
        size: 65536,
    };

    /// The same records with their pods' host ID ranges.
    fn records_with_ranges() -> Vec<ContainerRecord> {
        let mut records = records();
        for r in &mut records {
            r.host_ids = Some(if r.sandbox_id == "sb" {
                POD_SB
            } else {
                POD_OTHER
            });
        }
        records
    }

    #[test]
    fn v1_process_in_a_container() {
        let cg = parse_process_cgroups("5:memory:/stockade/sb/c1\n0::/user.slice\n").unwrap();
        assert_eq!(
            attribute(None, Some(&cg), &records()),
            Attribution::Container(Workload {
                namespace: "ns".into(),
                pod: "pod-sb".into(),
                container: "ctr-c1".into()
            })
        );
    }

    #[test]
    fn v2_process_in_a_sub_cgroup() {
        let cg = parse_process_cgroups("0::/stockade/sb/c1/worker\n").unwrap();
        assert!(matches!(
            attribute(None, Some(&cg), &records()),
            Attribution::Container(w) if w.container == "ctr-c1"
        ));
    }

    #[test]
    fn deleted_container_of_a_known_pod() {
        let cg = parse_process_cgroups("0::/stockade/sb/c9\n").unwrap();
        assert_eq!(
            attribute(None, Some(&cg), &records()),
            Attribution::Pod(Workload {
                namespace: "ns".into(),
                pod: "pod-sb".into(),
                container: UNKNOWN.into()
            })
        );
    }

    #[test]
    fn foreign_processes() {
        let cg = parse_process_cgroups("0::/system.slice/sshd.service\n").unwrap();
        assert_eq!(attribute(None, Some(&cg), &records()), Attribution::Foreign);
        // A record whose path does not follow <sandbox>/<id> gives no pod fallback.
        let cg = parse_process_cgroups("0::/elsewhere/y\n").unwrap();
        assert_eq!(attribute(None, Some(&cg), &records()), Attribution::Foreign);
        assert_eq!(attribute(None, Some(&[]), &records()), Attribution::Foreign);
        assert_eq!(attribute(None, None, &records()), Attribution::Gone);
        // A UID outside every pod's range changes nothing.
        assert_eq!(
            attribute(Some(0), None, &records_with_ranges()),
            Attribution::Gone
        );
    }

    #[test]
    fn an_exited_process_is_attributed_by_its_uid() {
        let records = records_with_ranges();
        // Pod "sb" has two containers: the pod is known, the container is not.
        assert_eq!(
            attribute(Some(POD_SB.first + 1000), None, &records),
            Attribution::Pod(Workload {
                namespace: "ns".into(),
                pod: "pod-sb".into(),
                container: UNKNOWN.into()
            })
        );
        // Pod "other" has one: that is the container.
        assert!(matches!(
            attribute(Some(POD_OTHER.first), None, &records),
            Attribution::Container(w) if w.container == "ctr-x"
        ));
    }

    #[test]
    fn the_uid_wins_over_a_cgroup_of_another_pod() {
        let records = records_with_ranges();
        // The pid now shows another pod's container (reused, or another PID namespace's).
        let cg = parse_process_cgroups("0::/stockade/sb/c1\n").unwrap();
        assert!(matches!(
            attribute(Some(POD_OTHER.first), Some(&cg), &records),
            Attribution::Container(w) if w.container == "ctr-x"
        ));
        // ...and a foreign cgroup does not hide the UID's pod.
        let cg = parse_process_cgroups("0::/system.slice/sshd.service\n").unwrap();
        assert!(matches!(
            attribute(Some(POD_SB.first), Some(&cg), &records),
            Attribution::Pod(w) if w.pod == "pod-sb"
        ));
        // Within the UID's pod, the cgroup names the container.
        assert!(matches!(
            attribute(Some(POD_SB.first), Some(&parse_process_cgroups("0::/stockade/sb/c1\n").unwrap()), &records),
            Attribution::Container(w) if w.container == "ctr-c1"
        ));
    }
}
