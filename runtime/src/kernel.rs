//! What the node's kernel and filesystems give Stockade's rootfs, decided from facts.
//!
//! The decisions are pure ([`check`], [`idmap_support`], [`overlay_api`]) over
//! [`NodeFacts`]; [`NodeFacts::probe`] gathers them (uname, statfs). Create turns a
//! refused idmapped mount into [`explain_idmap`]'s sentence; `stockade node check` prints
//! [`check`]'s findings.
//!
//! Kernel versions (mainline) the rootfs depends on:
//! - idmapped mounts (`mount_setattr(MOUNT_ATTR_IDMAP)`): 5.12, per filesystem: ext4,
//!   xfs, vfat 5.12; btrfs 5.15; erofs 5.17; f2fs 5.18; tmpfs 6.3; ceph 6.7;
//! - idmapped layers under overlayfs: 5.19;
//! - overlayfs `lowerdir+` through fsconfig (layers past mount(2)'s one-page option
//!   string): 6.8; below it, mount(2) with `lowerdir=` takes over.

use std::fmt;
use std::path::{Path, PathBuf};

/// The oldest kernel the rootfs works on (idmapped layers under overlayfs).
pub const MINIMUM: KernelVersion = KernelVersion::new(5, 19);

/// `major.minor` of a kernel release; the rest (`.0-31-amd64`) does not matter here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
}

impl KernelVersion {
    pub const fn new(major: u32, minor: u32) -> KernelVersion {
        KernelVersion { major, minor }
    }

    /// From a release string as uname gives it (`6.1.0-31-amd64`, `6.18.44-fc`).
    pub fn parse(release: &str) -> Option<KernelVersion> {
        let mut parts = release.split(|c: char| !c.is_ascii_digit());
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        Some(KernelVersion { major, minor })
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Filesystems with idmapped mounts, and the kernel that gave them.
const IDMAP_SINCE: &[(&str, KernelVersion)] = &[
    ("ext4", KernelVersion::new(5, 12)),
    ("xfs", KernelVersion::new(5, 12)),
    ("vfat", KernelVersion::new(5, 12)),
    ("btrfs", KernelVersion::new(5, 15)),
    ("erofs", KernelVersion::new(5, 17)),
    ("f2fs", KernelVersion::new(5, 18)),
    ("tmpfs", KernelVersion::new(6, 3)),
    ("ceph", KernelVersion::new(6, 7)),
];
const IDMAP_OVERLAY_LAYERS: KernelVersion = KernelVersion::new(5, 19);
const OVERLAY_LOWERDIR_PLUS: KernelVersion = KernelVersion::new(6, 8);

/// Whether idmapped mounts work on a filesystem under a kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdmapSupport {
    Yes,
    /// The filesystem has them from `since`; this kernel is older.
    KernelTooOld {
        since: KernelVersion,
    },
    /// Not a filesystem known to have them (nfs, 9p, overlay as a whole, ...).
    UnknownFilesystem,
}

/// Whether `fs` (a statfs name such as `ext4`) gives idmapped mounts under `kernel`.
pub fn idmap_support(kernel: KernelVersion, fs: &str) -> IdmapSupport {
    match IDMAP_SINCE.iter().find(|(name, _)| *name == fs) {
        Some((_, since)) if kernel >= *since => IdmapSupport::Yes,
        Some((_, since)) => IdmapSupport::KernelTooOld { since: *since },
        None => IdmapSupport::UnknownFilesystem,
    }
}

/// How overlay is mounted over the idmapped layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OverlayApi {
    /// fsopen/fsconfig with one `lowerdir+` per layer: any number of layers.
    LowerdirPlus,
    /// mount(2) with `lowerdir=a:b:c`: as many layers as fit in a page.
    Legacy,
}

pub fn overlay_api(kernel: KernelVersion) -> OverlayApi {
    if kernel >= OVERLAY_LOWERDIR_PLUS {
        OverlayApi::LowerdirPlus
    } else {
        OverlayApi::Legacy
    }
}

/// The sentence Create gives for an idmapped mount the kernel refused on `path`.
pub fn explain_idmap(kernel: KernelVersion, fs: &str, path: &Path) -> String {
    match idmap_support(kernel, fs) {
        IdmapSupport::KernelTooOld { since } => format!(
            "{} is on {fs}, which has idmapped mounts from Linux {since}; this kernel is {kernel}: \
             upgrade the kernel or put containerd's root on ext4 or xfs",
            path.display()
        ),
        IdmapSupport::UnknownFilesystem => format!(
            "{} is on {fs}, which has no idmapped mounts: put containerd's root on ext4, xfs \
             or btrfs",
            path.display()
        ),
        IdmapSupport::Yes if kernel < IDMAP_OVERLAY_LAYERS => format!(
            "idmapped layers under overlayfs need Linux {IDMAP_OVERLAY_LAYERS}; this kernel is \
             {kernel}"
        ),
        IdmapSupport::Yes => format!(
            "{} is on {fs} under Linux {kernel}, which should have idmapped mounts: the \
             kernel refused anyway (a filesystem mounted without them, or a security module)",
            path.display()
        ),
    }
}

/// What the checks look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeFacts {
    pub kernel: KernelVersion,
    /// Directories the rootfs comes from (containerd's root, its snapshots), with the
    /// statfs name of their filesystem.
    pub dirs: Vec<(PathBuf, String)>,
}

/// One line of `stockade node check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub feature: &'static str,
    pub ok: bool,
    pub detail: String,
}

/// Every rootfs feature, present or missing, with what is needed.
pub fn check(facts: &NodeFacts) -> Vec<Finding> {
    let k = facts.kernel;
    let mut findings = vec![
        Finding {
            feature: "kernel",
            ok: k >= MINIMUM,
            detail: format!(
                "Linux {k}; Stockade needs {MINIMUM} or later (idmapped overlay layers)"
            ),
        },
        Finding {
            feature: "idmapped-overlay-layers",
            ok: k >= IDMAP_OVERLAY_LAYERS,
            detail: format!("overlayfs over idmapped layers: Linux {IDMAP_OVERLAY_LAYERS}"),
        },
        Finding {
            feature: "overlay-lowerdir+",
            // Optional: mount(2) takes over below 6.8, with a layer limit.
            ok: true,
            detail: match overlay_api(k) {
                OverlayApi::LowerdirPlus => "fsconfig lowerdir+: any number of layers".into(),
                OverlayApi::Legacy => format!(
                    "no lowerdir+ before Linux {OVERLAY_LOWERDIR_PLUS}: mount(2), as many layers \
                     as fit in one page of options"
                ),
            },
        },
    ];
    for (dir, fs) in &facts.dirs {
        let support = idmap_support(k, fs);
        findings.push(Finding {
            feature: "idmapped-mounts",
            ok: support == IdmapSupport::Yes,
            detail: match support {
                IdmapSupport::Yes => format!("{} on {fs}: idmapped mounts", dir.display()),
                _ => explain_idmap(k, fs, dir),
            },
        });
    }
    findings
}

impl NodeFacts {
    /// This node's kernel and the filesystems of `dirs` (missing ones are skipped).
    pub fn probe(dirs: &[&Path]) -> std::io::Result<NodeFacts> {
        let uts = nix::sys::utsname::uname()?;
        let release = uts.release().to_string_lossy();
        let kernel = KernelVersion::parse(&release).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("kernel release {release:?} is not major.minor"),
            )
        })?;
        let dirs = dirs
            .iter()
            .filter_map(|d| Some((d.to_path_buf(), filesystem(d).ok()?)))
            .collect();
        Ok(NodeFacts { kernel, dirs })
    }
}

/// The statfs name of the filesystem holding `path` (`ext4`, `tmpfs`, ...).
pub fn filesystem(path: &Path) -> std::io::Result<String> {
    use nix::sys::statfs::{self, statfs};
    let kind = statfs(path)?.filesystem_type();
    let known = [
        (statfs::EXT4_SUPER_MAGIC, "ext4"),
        (statfs::XFS_SUPER_MAGIC, "xfs"),
        (statfs::BTRFS_SUPER_MAGIC, "btrfs"),
        (statfs::TMPFS_MAGIC, "tmpfs"),
        (statfs::OVERLAYFS_SUPER_MAGIC, "overlay"),
        (statfs::MSDOS_SUPER_MAGIC, "vfat"),
        (statfs::F2FS_SUPER_MAGIC, "f2fs"),
        (statfs::NFS_SUPER_MAGIC, "nfs"),
        (statfs::FUSE_SUPER_MAGIC, "fuse"),
    ];
    Ok(known
        .iter()
        .find(|(magic, _)| *magic == kind)
        .map(|(_, name)| name.to_string())
        .unwrap_or_else(|| format!("filesystem 0x{:x}", kind.0)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn releases_parse_to_major_minor() {
        assert_eq!(
            KernelVersion::parse("6.1.0-31-amd64"),
            Some(KernelVersion::new(6, 1))
        );
        assert_eq!(
            KernelVersion::parse("6.18.44-fc-v669"),
            Some(KernelVersion::new(6, 18))
        );
        assert_eq!(
            KernelVersion::parse("5.15"),
            Some(KernelVersion::new(5, 15))
        );
        assert_eq!(KernelVersion::parse("linux"), None);
        assert!(KernelVersion::new(6, 1) < KernelVersion::new(6, 10));
    }

    #[test]
    fn debian_12_has_idmapped_ext4_but_not_tmpfs() {
        let k = KernelVersion::new(6, 1);
        assert_eq!(idmap_support(k, "ext4"), IdmapSupport::Yes);
        assert_eq!(
            idmap_support(k, "tmpfs"),
            IdmapSupport::KernelTooOld {
                since: KernelVersion::new(6, 3)
            }
        );
        assert_eq!(idmap_support(k, "nfs"), IdmapSupport::UnknownFilesystem);
        assert_eq!(overlay_api(k), OverlayApi::Legacy);
        assert_eq!(
            overlay_api(KernelVersion::new(6, 8)),
            OverlayApi::LowerdirPlus
        );
        let why = explain_idmap(k, "tmpfs", Path::new("/var/lib/containerd"));
        assert!(why.contains("Linux 6.3") && why.contains("6.1"), "{why}");
        assert!(why.contains("/var/lib/containerd"), "{why}");
    }

    #[test]
    fn node_check_names_what_is_missing() {
        let facts = NodeFacts {
            kernel: KernelVersion::new(5, 15),
            dirs: vec![
                ("/var/lib/containerd".into(), "ext4".into()),
                ("/run/containerd".into(), "tmpfs".into()),
            ],
        };
        let findings = check(&facts);
        let missing: Vec<&str> = findings
            .iter()
            .filter(|f| !f.ok)
            .map(|f| f.feature)
            .collect();
        assert_eq!(
            missing,
            vec!["kernel", "idmapped-overlay-layers", "idmapped-mounts"]
        );
        let tmpfs = findings
            .iter()
            .rfind(|f| f.feature == "idmapped-mounts")
            .unwrap();
        assert!(tmpfs.detail.contains("/run/containerd"), "{tmpfs:?}");
        let current = check(&NodeFacts {
            kernel: KernelVersion::new(6, 8),
            dirs: vec![("/x".into(), "xfs".into())],
        });
        assert!(current.iter().all(|f| f.ok), "{current:?}");
    }

    #[test]
    fn probe_reads_this_node() {
        let facts = NodeFacts::probe(&[Path::new("/proc"), Path::new("/no/such/dir")]).unwrap();
        assert!(facts.kernel >= KernelVersion::new(3, 0));
        assert_eq!(facts.dirs.len(), 1, "{facts:?}");
    }
}
