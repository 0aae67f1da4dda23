//! Node state: the contract between the shims (one per pod) and the node's exporter
//! (`stockade monitor`).
//!
//! CONTRACT: a shim writes one [`ContainerRecord`] per running container as
//! `<dir>/<container-id>.json` ([`crate::state_dir::StateDir::containers`]) with [`write`] when the
//! container has started (its init pid is known), and removes it with [`remove`] when the
//! container is deleted. [`write`] is atomic (temp file + rename), so a reader never sees a
//! half-written record; it does not sync (records do not outlive the node's processes).
//! The container's start latency (from the shim receiving `Create` to
//! `Start` returning) travels in the record itself (`start_latency_ms`): the exporter
//! observes it once per container id. Containers that come and go between two scrapes
//! are therefore missed by the latency histogram, which is acceptable for a node-level
//! distribution.

use crate::idrange::IdRange;
use crate::pod::PodIdentity;
use serde::{Deserialize, Serialize};
use std::fs::DirBuilder;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum NodeStateError {
    #[error("container id {id:?} cannot name a state file: {problem}")]
    InvalidId { id: String, problem: &'static str },
    #[error("node state {path}: {action}: {source}")]
    Io {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("node state {path}: invalid record: {source}")]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// What the exporter knows about a running container.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ContainerRecord {
    pub id: String,
    pub sandbox_id: String,
    /// Kubernetes namespace, pod and container names (CRI annotations), when given.
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
    /// The hardening profile's name.
    pub profile: String,
    /// The absolute cgroupsPath of the hardened spec (`/stockade/<sandbox>/<id>`).
    pub cgroups_path: String,
    /// The container's init process, as the host sees it.
    pub init_pid: i32,
    pub created_unix_ms: u64,
    /// From the shim receiving `Create` to `Start` returning, in milliseconds.
    #[serde(default)]
    pub start_latency_ms: Option<f64>,
    /// The pod's host UID/GID range (its user namespace), when it has one.
    #[serde(default)]
    pub host_ids: Option<IdRange>,
}

impl ContainerRecord {
    /// A record for a container of `pod`, created now.
    pub fn new(
        id: &str,
        pod: &PodIdentity,
        profile: &str,
        cgroups_path: &str,
        init_pid: i32,
        host_ids: Option<IdRange>,
    ) -> Self {
        ContainerRecord {
            id: id.to_string(),
            sandbox_id: pod.sandbox_id.clone(),
            namespace: pod.namespace.clone(),
            pod: pod.pod_name.clone(),
            container: pod.container_name.clone(),
            profile: profile.to_string(),
            cgroups_path: cgroups_path.to_string(),
            init_pid,
            created_unix_ms: unix_ms(SystemTime::now()),
            start_latency_ms: None,
            host_ids,
        }
    }
}

/// Milliseconds since the epoch (0 before it).
pub fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// containerd ids are `[A-Za-z0-9_.-]`, at most 76 characters; anything else could escape
/// the directory or collide with our temp files.
fn check_id(id: &str) -> Result<(), NodeStateError> {
    let invalid = |problem| NodeStateError::InvalidId {
        id: id.to_string(),
        problem,
    };
    if id.is_empty() {
        return Err(invalid("it is empty"));
    }
    if id.len() > 255 - ".json".len() {
        return Err(invalid("it is too long"));
    }
    if id.starts_with('.') {
        return Err(invalid("it starts with `.`"));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return Err(invalid(
            "only letters, digits, `_`, `-` and `.` are allowed",
        ));
    }
    Ok(())
}

/// The record's file: `<dir>/<id>.json`.
pub fn record_path(dir: &Path, id: &str) -> Result<PathBuf, NodeStateError> {
    check_id(id)?;
    Ok(dir.join(format!("{id}.json")))
}

/// Writes (or replaces) a container's record atomically; creates `dir` (0700) if missing.
pub fn write(dir: &Path, record: &ContainerRecord) -> Result<PathBuf, NodeStateError> {
    let path = record_path(dir, &record.id)?;
    let io = |path: &Path, action| {
        let path = path.to_path_buf();
        move |source| NodeStateError::Io {
            path,
            action,
            source,
        }
    };
    DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io(dir, "cannot create the directory"))?;
    let json = serde_json::to_vec_pretty(record).map_err(|source| NodeStateError::Json {
        path: path.clone(),
        source,
    })?;
    // Hidden name (list() skips dot files), unique per writer process.
    let tmp = dir.join(format!(".{}.json.{}.tmp", record.id, std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io(&tmp, "cannot create"))?;
        // Not synced: a record describes running processes, which a crash of the node
        // ends as well, and an fsync on Start's path waits for the journal of whatever
        // else the node writes (tens of ms under load where /run is on disk).
        file.write_all(&json).map_err(io(&tmp, "cannot write"))?;
        std::fs::rename(&tmp, &path).map_err(io(&path, "cannot rename the temp file to"))
    })();
    if result.is_err() {
        // Leave nothing behind.
        let _ = std::fs::remove_file(&tmp);
    }
    result.map(|()| path)
}

/// Removes a container's record; a record that is already gone is fine.
pub fn remove(dir: &Path, id: &str) -> Result<(), NodeStateError> {
    let path = record_path(dir, id)?;
    match std::fs::remove_file(&path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(NodeStateError::Io {
            path,
            action: "cannot remove",
            source,
        }),
    }
}

/// Every record in a directory, and the files that could not be read as one.
#[derive(Debug, Default)]
pub struct Listing {
    pub records: Vec<ContainerRecord>,
    pub broken: Vec<NodeStateError>,
}

/// Reads every `*.json` record of `dir` (sorted by id); a missing directory is empty. A file
/// that vanishes while listing (container deleted) is skipped silently.
pub fn list(dir: &Path) -> Result<Listing, NodeStateError> {
    let mut listing = Listing::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(listing),
        Err(source) => {
            return Err(NodeStateError::Io {
                path: dir.to_path_buf(),
                action: "cannot list",
                source,
            })
        }
    };
    for entry in entries {
        let entry = entry.map_err(|source| NodeStateError::Io {
            path: dir.to_path_buf(),
            action: "cannot list",
            source,
        })?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Some(id) = name.strip_suffix(".json") else {
            continue;
        };
        if name.starts_with('.') {
            continue;
        }
        let path = entry.path();
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => {
                listing.broken.push(NodeStateError::Io {
                    path,
                    action: "cannot read",
                    source,
                });
                continue;
            }
        };
        match serde_json::from_slice::<ContainerRecord>(&text) {
            Ok(record) if record.id == id => listing.records.push(record),
            Ok(record) => listing.broken.push(NodeStateError::InvalidId {
                id: record.id,
                problem: "the record's id does not match its file name",
            }),
            Err(source) => listing.broken.push(NodeStateError::Json { path, source }),
        }
    }
    listing.records.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> ContainerRecord {
        ContainerRecord {
            id: id.into(),
            sandbox_id: "sb".into(),
            namespace: Some("ns".into()),
            pod: Some("p".into()),
            container: Some("c".into()),
            profile: "default".into(),
            cgroups_path: format!("/stockade/sb/{id}"),
            init_pid: 42,
            created_unix_ms: 1,
            start_latency_ms: Some(250.5),
            host_ids: Some(IdRange {
                first: 1 << 30,
                size: 65536,
            }),
        }
    }

    #[test]
    fn write_list_remove() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("containers");
        write(&state, &record("b")).unwrap();
        write(&state, &record("a")).unwrap();
        let mut changed = record("a");
        changed.init_pid = 43;
        write(&state, &changed).unwrap();
        std::fs::write(state.join("broken.json"), "{").unwrap();
        std::fs::write(state.join("other.txt"), "x").unwrap();
        let listing = list(&state).unwrap();
        assert_eq!(listing.records, vec![changed, record("b")]);
        assert_eq!(listing.broken.len(), 1, "{:?}", listing.broken);
        assert!(listing.broken[0].to_string().contains("broken.json"));
        remove(&state, "a").unwrap();
        remove(&state, "a").unwrap();
        assert_eq!(list(&state).unwrap().records, vec![record("b")]);
        // No temp files left behind.
        let names: Vec<_> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn missing_dir_is_empty_and_bad_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(list(&dir.path().join("nope")).unwrap().records.is_empty());
        for bad in ["", "../x", "a/b", ".hidden", "sp ace"] {
            let err = write(dir.path(), &record(bad)).unwrap_err();
            assert!(matches!(err, NodeStateError::InvalidId { .. }), "{bad}");
        }
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn mismatched_id_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), &record("a")).unwrap();
        std::fs::rename(dir.path().join("a.json"), dir.path().join("b.json")).unwrap();
        let listing = list(dir.path()).unwrap();
        assert!(listing.records.is_empty());
        assert_eq!(listing.broken.len(), 1);
    }
}
