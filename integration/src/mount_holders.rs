//! Who holds a filesystem mounted: every mount of one device (st_dev), in every mount
//! namespace on the node, with a process that lives there. Finds the namespace (and the
//! path in it) that keeps a host directory busy after its owner unmounted it.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// One mount of the device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// The mount namespace's inode.
    pub mnt_ns: u64,
    /// One process in that namespace: (pid, command name).
    pub pid: i32,
    pub comm: String,
    /// Where it is mounted, as that process sees it.
    pub mount_point: PathBuf,
    /// The directory of the filesystem that is the mount's root.
    pub root: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "mnt ns {} (pid {} {}): {} (root {})",
            self.mnt_ns,
            self.pid,
            self.comm,
            self.mount_point.display(),
            self.root
        )
    }
}

/// `major:minor` of the filesystem holding `path`, as mountinfo writes it.
pub fn device_of(path: &Path) -> Result<String> {
    let dev = std::fs::metadata(path)
        .with_context(|| format!("stat {}", path.display()))?
        .dev();
    Ok(format!("{}:{}", libc::major(dev), libc::minor(dev)))
}

/// The mount namespace of this process.
pub fn own_mnt_ns() -> Result<u64> {
    Ok(std::fs::metadata("/proc/self/ns/mnt")
        .context("stat /proc/self/ns/mnt")?
        .ino())
}

/// Every mount of device `majmin` in every mount namespace that has a process (processes
/// that exit while being read are skipped). Each namespace is named by a process in it:
/// this one for its own, else the first user process, else a kernel thread.
pub fn holders(majmin: &str) -> Result<Vec<Holder>> {
    let mut members: BTreeMap<u64, procfs::process::Process> = BTreeMap::new();
    let mut has_user: BTreeSet<u64> = BTreeSet::new();
    let own = own_mnt_ns()?;
    members.insert(
        own,
        procfs::process::Process::myself().context("/proc/self")?,
    );
    has_user.insert(own);
    for p in procfs::process::all_processes().context("listing processes")? {
        let Ok(p) = p else { continue };
        let Ok(ns) = std::fs::metadata(format!("/proc/{}/ns/mnt", p.pid)) else {
            continue;
        };
        let user = p.cmdline().is_ok_and(|c| !c.is_empty());
        if has_user.contains(&ns.ino()) || (!user && members.contains_key(&ns.ino())) {
            continue;
        }
        if user {
            has_user.insert(ns.ino());
        }
        members.insert(ns.ino(), p);
    }
    let mut found = Vec::new();
    for (mnt_ns, p) in members {
        let Ok(mounts) = p.mountinfo() else { continue };
        let comm = p.stat().map(|s| s.comm).unwrap_or_default();
        found.extend(
            mounts
                .into_iter()
                .filter(|m| m.majmin == majmin)
                .map(|m| Holder {
                    mnt_ns,
                    pid: p.pid,
                    comm: comm.clone(),
                    mount_point: m.mount_point,
                    root: m.root,
                }),
        );
    }
    Ok(found)
}

/// `holders` as lines, for a failure message.
pub fn describe(holders: &[Holder]) -> String {
    if holders.is_empty() {
        return "none".into();
    }
    holders
        .iter()
        .map(|h| format!("\n  {h}"))
        .collect::<String>()
}
