//! Which pod and container a process belongs to: pid -> /proc/PID/cgroup -> the
//! [`ContainerRecord`] whose cgroupsPath holds it.

use super::cgroup::{is_within, ProcCgroup};
use crate::node_state::ContainerRecord;

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
    /// The process is gone: everything `unknown`.
    Gone,
    /// Not a Stockade container (another runtime, a system service).
    Foreign,
}

/// Attributes a process from its cgroups. Stockade lays cgroups out as
/// `<parent>/<sandbox-id>/<container-id>`, so a process below the parent directory of a
/// record's cgroupsPath belongs to that record's pod.
pub fn attribute(cgroups: &[ProcCgroup], records: &[ContainerRecord]) -> Attribution {
    // The deepest (most specific) match wins, should cgroupsPaths nest.
    let best = records
        .iter()
        .filter(|r| !r.cgroups_path.is_empty())
        .filter(|r| cgroups.iter().any(|c| is_within(&c.path, &r.cgroups_path)))
        .max_by_key(|r| r.cgroups_path.len());
    if let Some(record) = best {
        return Attribution::Container(Workload::of(record));
    }
    let pod = records
        .iter()
        .find(|r| pod_dir(r).is_some_and(|dir| cgroups.iter().any(|c| is_within(&c.path, dir))));
    match pod {
        Some(record) => Attribution::Pod(Workload {
            container: UNKNOWN.into(),
            ..Workload::of(record)
        }),
        None => Attribution::Foreign,
    }
}

/// The pod's cgroup directory, when the record's path follows `<...>/<sandbox-id>/<id>`.
fn pod_dir(record: &ContainerRecord) -> Option<&str> {
    let (dir, _) = record.cgroups_path.trim_end_matches('/').rsplit_once('/')?;
    (dir.rsplit('/').next() == Some(record.sandbox_id.as_str())).then_some(dir)
}

#[cfg(test)]
mod tests {
    use super::super::cgroup::parse_proc_cgroup;
    use super::*;

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
        }
    }

    fn records() -> Vec<ContainerRecord> {
        vec![
            rec("sb", "sb", "/stockade/sb/sb"),
            rec("c1", "sb", "/stockade/sb/c1"),
            rec("x", "other", "/elsewhere/x"),
        ]
    }

    #[test]
    fn v1_process_in_a_container() {
        let cg = parse_proc_cgroup("5:memory:/stockade/sb/c1\n0::/user.slice\n");
        assert_eq!(
            attribute(&cg, &records()),
            Attribution::Container(Workload {
                namespace: "ns".into(),
                pod: "pod-sb".into(),
                container: "ctr-c1".into()
            })
        );
    }

    #[test]
    fn v2_process_in_a_sub_cgroup() {
        let cg = parse_proc_cgroup("0::/stockade/sb/c1/worker\n");
        assert!(matches!(
            attribute(&cg, &records()),
            Attribution::Container(w) if w.container == "ctr-c1"
        ));
    }

    #[test]
    fn deleted_container_of_a_known_pod() {
        let cg = parse_proc_cgroup("0::/stockade/sb/c9\n");
        assert_eq!(
            attribute(&cg, &records()),
            Attribution::Pod(Workload {
                namespace: "ns".into(),
                pod: "pod-sb".into(),
                container: UNKNOWN.into()
            })
        );
    }

    #[test]
    fn foreign_processes() {
        let cg = parse_proc_cgroup("0::/system.slice/sshd.service\n");
        assert_eq!(attribute(&cg, &records()), Attribution::Foreign);
        // A record whose path does not follow <sandbox>/<id> gives no pod fallback.
        let cg = parse_proc_cgroup("0::/elsewhere/y\n");
        assert_eq!(attribute(&cg, &records()), Attribution::Foreign);
        assert_eq!(attribute(&[], &records()), Attribution::Foreign);
    }
}
