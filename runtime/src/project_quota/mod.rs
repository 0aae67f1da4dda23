//! Project quotas on a container's writable layer: what the hardener's
//! [`StorageQuota`](crate::hardener::storage::StorageQuota) decided, carried out.
//!
//! [`writable_layer`] gathers the facts (where the upper directory is, whether its
//! filesystem enforces project quotas); [`apply`] claims a project ID, sets its limits and
//! gives it to the upper and work directories; [`release`] takes it all back at delete.
//! What was applied is kept in the bundle ([`RECORD`]), so a restarted shim, or `shim
//! delete`, releases it too.

mod ids;
mod sys;

use std::fs::File;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::hardener::storage::{StorageQuota, WritableLayer};
use crate::rootfs::RootfsMount;

pub use ids::{table_dir, FIRST_PROJECT_ID, PROJECT_IDS};

/// The bundle's record of the quota applied.
pub const RECORD: &str = "stockade-quota.json";

/// What a project quota needs, for the error where it is missing.
const NEEDS: &str = "project quotas need ext4 with the `project,quota` features (mkfs.ext4 -O \
                     project,quota, or tune2fs -O project,quota) mounted with prjquota, or xfs \
                     mounted with prjquota";

#[derive(Debug, thiserror::Error)]
pub enum QuotaError {
    #[error("project quota on {path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("no free project ID in {first}..{end} (table {table})", end = .first + PROJECT_IDS)]
    Exhausted { first: u32, table: PathBuf },
}

fn io_err<'a>(
    path: &'a Path,
    what: &'static str,
) -> impl FnOnce(std::io::Error) -> QuotaError + 'a {
    move |source| QuotaError::Io {
        path: path.to_path_buf(),
        what,
        source,
    }
}

/// What was applied, as kept in the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Applied {
    pub project_id: u32,
    pub dirs: Vec<PathBuf>,
    /// The ID's claim in the shim state's table.
    pub claim: PathBuf,
}

/// The writable layer of containerd's rootfs mounts, and whether a project quota can bound
/// it. Reads only.
pub fn writable_layer(mounts: &[RootfsMount]) -> WritableLayer {
    let [mount] = mounts else {
        // None, or several (refused by the rootfs mount, with its own error).
        return WritableLayer::None;
    };
    let option = |key: &str| {
        mount
            .options
            .iter()
            .find_map(|o| o.strip_prefix(key)?.strip_prefix('='))
            .map(PathBuf::from)
    };
    match mount.kind.as_str() {
        "overlay" => match (option("upperdir"), option("workdir")) {
            (Some(upper), work) => probe(upper, work),
            (None, _) => WritableLayer::None,
        },
        _ if mount.options.iter().any(|o| o == "ro") => WritableLayer::None,
        kind => WritableLayer::NoQuota {
            why: format!(
                "the rootfs is a {kind} mount of {}, not an overlay with an upper directory of \
                 its own",
                mount.source
            ),
        },
    }
}

fn probe(upper: PathBuf, work: Option<PathBuf>) -> WritableLayer {
    let no = |why: String| WritableLayer::NoQuota { why };
    let dir = match File::open(&upper) {
        Ok(f) => f,
        Err(e) => {
            return no(format!(
                "cannot open the upper directory {}: {e}",
                upper.display()
            ))
        }
    };
    let fs = describe(&dir);
    let on = sys::project_quotas_on(dir.as_fd());
    let where_ = format!("{} is on {}", upper.display(), fs.label());
    match (fs.kind.as_str(), on) {
        (_, Ok(())) => WritableLayer::Quota {
            dirs: std::iter::once(upper).chain(work).collect(),
            filesystem: fs.label(),
        },
        ("ext4" | "xfs", Err(_)) if !fs.prjquota => {
            no(format!("{where_} mounted without prjquota; {NEEDS}"))
        }
        ("ext4" | "xfs", Err(e)) => no(format!(
            "{where_} mounted with prjquota, but its project quotas are off ({e}); {NEEDS}"
        )),
        (_, Err(_)) => no(format!("{where_}, which has no project quotas; {NEEDS}")),
    }
}

/// The filesystem under a directory, from statfs and mountinfo.
struct FsFacts {
    kind: String,
    device: Option<String>,
    prjquota: bool,
}

impl FsFacts {
    fn label(&self) -> String {
        match &self.device {
            Some(d) => format!("{} ({d})", self.kind),
            None => self.kind.clone(),
        }
    }
}

fn describe(dir: &File) -> FsFacts {
    let kind = match rustix::fs::fstatfs(dir).map(|s| s.f_type as u64) {
        Ok(0xEF53) => "ext4".to_string(),
        Ok(0x5846_5342) => "xfs".to_string(),
        Ok(0x0102_1994) => "tmpfs".to_string(),
        Ok(0x9123_683E) => "btrfs".to_string(),
        Ok(0x794C_7630) => "overlay".to_string(),
        Ok(other) => format!("filesystem type {other:#x}"),
        Err(e) => format!("a filesystem statfs cannot name ({e})"),
    };
    let dev = rustix::fs::fstat(dir).ok().map(|s| {
        format!(
            "{}:{}",
            rustix::fs::major(s.st_dev),
            rustix::fs::minor(s.st_dev)
        )
    });
    let (device, prjquota) = dev.map(|dev| mount_facts(&dev)).unwrap_or_default();
    FsFacts {
        kind,
        device,
        prjquota,
    }
}

/// A device's first mount's source, and whether it is mounted with project quotas.
type MountFacts = (Option<String>, bool);

/// The device's first mount's source and whether it is mounted with project quotas,
/// read once per process and device: every Create asks (for its writable layer), and the
/// table they come from lists every mount of the node. (What decides a quota is
/// `sys::project_quotas_on`, asked every time; these facts only word the answer.)
fn mount_facts(majmin: &str) -> MountFacts {
    static SEEN: Mutex<Vec<(String, MountFacts)>> = Mutex::new(Vec::new());
    if let Some(facts) = SEEN.lock().ok().and_then(|seen| {
        seen.iter()
            .find(|(dev, _)| dev == majmin)
            .map(|(_, facts)| facts.clone())
    }) {
        return facts;
    }
    // Read line by line up to the mount: the kernel prints the table as it is read, and
    // the device of the containers' layers is mounted long before the pods' overlays.
    let mount = File::open("/proc/self/mountinfo").ok().and_then(|f| {
        first_mount_of(
            std::io::BufRead::lines(std::io::BufReader::new(f)).map_while(Result::ok),
            majmin,
        )
    });
    let facts = (
        mount.as_ref().and_then(|m| m.mount_source.clone()),
        mount.is_some_and(|m| {
            ["prjquota", "pquota", "prjjquota"]
                .iter()
                .any(|o| m.super_options.contains_key(*o))
        }),
    );
    if let Ok(mut seen) = SEEN.lock() {
        seen.push((majmin.to_string(), facts.clone()));
    }
    facts
}

/// The first mount of device `majmin` in the lines of a mountinfo table, read no further
/// than that line and parsing only it: the table holds every mount of the node
/// (thousands with many pods).
fn first_mount_of<L: AsRef<str>>(
    table: impl IntoIterator<Item = L>,
    majmin: &str,
) -> Option<procfs::process::MountInfo> {
    table
        .into_iter()
        .find(|line| line.as_ref().split(' ').nth(2) == Some(majmin))
        .and_then(|line| procfs::process::MountInfo::from_line(line.as_ref()).ok())
}

/// Claim a project ID (from `table`), record it in `bundle`, set its limits and give it to
/// the quota's directories. On failure, whatever was done is taken back.
pub fn apply(
    quota: &StorageQuota,
    table: &Path,
    bundle: &Path,
    owner: &str,
) -> Result<Applied, QuotaError> {
    let upper = quota.dirs.first().ok_or_else(|| QuotaError::Io {
        path: bundle.to_path_buf(),
        what: "no upper directory",
        source: std::io::ErrorKind::InvalidInput.into(),
    })?;
    let fs = File::open(upper).map_err(io_err(upper, "opening the upper directory"))?;
    let (project_id, claim) = ids::claim(table, owner, |id| {
        sys::usage(fs.as_fd(), id).map(|u| u == (0, 0))
    })
    .map_err(|e| match e {
        ids::ClaimError::Io(path, source) => QuotaError::Io {
            path,
            what: "claiming a project ID",
            source,
        },
        ids::ClaimError::Exhausted => QuotaError::Exhausted {
            first: FIRST_PROJECT_ID,
            table: table.to_path_buf(),
        },
    })?;
    let applied = Applied {
        project_id,
        dirs: quota.dirs.clone(),
        claim,
    };
    let record = bundle.join(RECORD);
    let done = std::fs::write(&record, serde_json::to_vec(&applied).unwrap_or_default())
        .map_err(io_err(&record, "recording the quota"))
        .and_then(|()| {
            sys::set_limits(
                fs.as_fd(),
                project_id,
                quota.limits.bytes,
                quota.limits.inodes,
            )
            .map_err(io_err(upper, "setting the project's limits (Q_SETQUOTA)"))
        })
        .and_then(|()| {
            quota.dirs.iter().try_for_each(|dir| {
                let f = File::open(dir).map_err(io_err(dir, "opening"))?;
                sys::set_project(f.as_fd(), project_id)
                    .map_err(io_err(dir, "setting its project ID (FS_IOC_FSSETXATTR)"))
            })
        });
    match done {
        Ok(()) => Ok(applied),
        Err(e) => {
            // What release cannot undo (the limits, where quotactl itself failed) is
            // harmless once the ID is free: the next claim sets its own limits.
            let _ = release(bundle);
            let _ = std::fs::remove_file(&applied.claim);
            let _ = std::fs::remove_file(&record);
            Err(e)
        }
    }
}

/// Take back what [`apply`] recorded in `bundle`: the limits, the project ID's claim, the
/// record. Nothing recorded: nothing to do.
pub fn release(bundle: &Path) -> Result<Option<Applied>, QuotaError> {
    let record = bundle.join(RECORD);
    let applied: Applied = match std::fs::read(&record) {
        Ok(b) => match serde_json::from_slice(&b) {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(record = %record.display(), error = %e, "unreadable quota record removed");
                let _ = std::fs::remove_file(&record);
                return Ok(None);
            }
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err(&record, "reading")(e)),
    };
    // Any of its directories reaches the filesystem; when none is left, neither are the
    // files charged to the project, and the next claim finds it unused.
    if let Some(fs) = applied.dirs.iter().find_map(|d| File::open(d).ok()) {
        sys::set_limits(fs.as_fd(), applied.project_id, 0, 0)
            .map_err(io_err(&applied.dirs[0], "removing the project's limits"))?;
    }
    match std::fs::remove_file(&applied.claim) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(io_err(&applied.claim, "freeing the project ID")(e))
        }
        _ => {}
    }
    std::fs::remove_file(&record).map_err(io_err(&record, "removing"))?;
    Ok(Some(applied))
}

#[cfg(test)]
mod tests;
