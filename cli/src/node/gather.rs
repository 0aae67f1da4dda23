//! Gathering a node's facts: files under a root directory (`/` on a node, a fixture in
//! tests), and, unless told not to, live probes (an idmapped clone per filesystem,
//! `containerd --version`). Nothing here judges; nothing is changed on the node.

use super::containerd::{self, ConfigSource};
use super::facts::*;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use stockade_runtime::idrange::IdRange;
use stockade_runtime::profile::{Profile, Verdict};

/// Where the facts come from.
#[derive(Debug, Clone)]
pub struct Sources {
    /// Every absolute path below is read under this root.
    pub root: PathBuf,
    pub containerd_config: PathBuf,
    pub kubelet_config: PathBuf,
    /// Profiles to check besides those containerd's config names.
    pub profiles: Vec<PathBuf>,
    /// Run live probes (off for fixtures: they would probe this machine).
    pub probe: bool,
}

/// The profile the shim loads when a runtime has no ConfigPath.
const SHIM_DEFAULT_PROFILE: &str = "/etc/stockade/default.toml";
/// CAP_SYS_RESOURCE's bit in CapEff.
const CAP_SYS_RESOURCE: u32 = 24;

impl Sources {
    /// `path` (absolute, as on the node) under the root.
    fn at(&self, path: &Path) -> PathBuf {
        self.root.join(path.strip_prefix("/").unwrap_or(path))
    }

    fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.at(Path::new(path))).ok()
    }
}

/// The node's files under the root, for [`containerd::load`].
struct RootFs<'a>(&'a Sources);

impl ConfigSource for RootFs<'_> {
    fn read(&self, path: &Path) -> std::io::Result<String> {
        std::fs::read_to_string(self.0.at(path))
    }

    /// Globs in the last component only (`conf.d/*.toml`), as containerd's drop-ins use.
    fn glob(&self, pattern: &Path) -> Vec<PathBuf> {
        let (Some(dir), Some(name)) = (pattern.parent(), pattern.file_name()) else {
            return Vec::new();
        };
        let name = name.to_string_lossy();
        let Ok(entries) = std::fs::read_dir(self.0.at(dir)) else {
            return Vec::new();
        };
        let mut found: Vec<PathBuf> = entries
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|f| glob_match(&name, f))
            .map(|f| dir.join(f))
            .collect();
        found.sort();
        found
    }
}

/// Shell-style `*` and `?` matching of one path component.
fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    go(&p, &n)
}

pub fn gather(s: &Sources) -> NodeFacts {
    let mounts = parse_mounts(&s.read("/proc/self/mounts").unwrap_or_default());
    let mut facts = NodeFacts {
        kernel: kernel(s),
        cgroup: CgroupFacts {
            version: cgroup_version(&mounts),
        },
        kubelet_cgroup_driver: s
            .read(&s.kubelet_config.display().to_string())
            .and_then(|t| yaml_top_level(&t, "cgroupDriver")),
        subuid: sub_ids(s, "/etc/subuid"),
        subgid: sub_ids(s, "/etc/subgid"),
        useradd_subuid_range: useradd_range(&s.read("/etc/login.defs").unwrap_or_default()),
        cap_sys_resource: s
            .read("/proc/self/status")
            .and_then(|t| cap_eff(&t))
            .map(|caps| caps & (1 << CAP_SYS_RESOURCE) != 0),
        ..NodeFacts::default()
    };
    match containerd::load(&RootFs(s), &s.containerd_config) {
        Ok(Some(mut c)) => {
            if let Some(dir) = c.registry_config_path.clone() {
                c.insecure_registries.extend(hosts_dir(s, &dir));
            }
            if s.probe {
                c.binary_version = containerd_version();
            }
            facts.containerd = Some(c);
        }
        Ok(None) => {}
        Err(problem) => {
            facts.containerd = Some(ContainerdFacts {
                problems: vec![problem],
                ..ContainerdFacts::default()
            })
        }
    }
    facts.profiles = profiles(s, facts.containerd.as_ref());
    facts.idmap = idmap(s, &mounts, facts.containerd.as_ref(), &facts.profiles);
    facts
}

fn kernel(s: &Sources) -> KernelFacts {
    KernelFacts {
        release: s
            .read("/proc/sys/kernel/osrelease")
            .map(|r| r.trim().to_string()),
        sysctls: SYSCTLS
            .iter()
            .map(|name| {
                let file = format!("/proc/sys/{}", name.replace('.', "/"));
                (
                    name.to_string(),
                    s.read(&file).map(|v| v.trim().to_string()),
                )
            })
            .collect(),
    }
}

/// (mount point, fs type) of each line of /proc/self/mounts.
fn parse_mounts(text: &str) -> Vec<(PathBuf, String)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let _device = fields.next()?;
            let point = unescape_octal(fields.next()?);
            Some((PathBuf::from(point), fields.next()?.to_string()))
        })
        .collect()
}

/// The kernel writes space, tab, newline and backslash in mount points as `\ooo`.
fn unescape_octal(field: &str) -> String {
    let mut out = String::new();
    let mut chars = field.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let digits: String = chars.clone().take(3).collect();
            if let Ok(n) = u8::from_str_radix(&digits, 8) {
                out.push(n as char);
                chars.nth(2);
                continue;
            }
        }
        out.push(c);
    }
    out
}

/// The filesystem type `path` is on: the last-mounted longest mount point above it.
fn fs_type(mounts: &[(PathBuf, String)], path: &Path) -> Option<String> {
    mounts
        .iter()
        .filter(|(point, _)| path.starts_with(point))
        .max_by_key(|(point, _)| point.components().count())
        .map(|(_, fs)| fs.clone())
}

fn cgroup_version(mounts: &[(PathBuf, String)]) -> CgroupVersion {
    let at = |p: &str| {
        mounts
            .iter()
            .rev()
            .find(|(point, _)| point == Path::new(p))
            .map(|(_, fs)| fs.as_str())
    };
    match (at("/sys/fs/cgroup"), at("/sys/fs/cgroup/unified")) {
        (Some("cgroup2"), _) => CgroupVersion::V2,
        (Some(_), Some("cgroup2")) => CgroupVersion::Hybrid,
        (Some(_), _) => CgroupVersion::V1,
        (None, _) => CgroupVersion::Unknown,
    }
}

/// A top-level `key: value` of a YAML document (kubelet's config is flat where it matters).
fn yaml_top_level(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        let value = value.split('#').next()?.trim().trim_matches(['"', '\'']);
        (!value.is_empty()).then(|| value.to_string())
    })
}

fn sub_ids(s: &Sources, path: &str) -> SubIds {
    let text = s.read(path);
    SubIds {
        path: PathBuf::from(path),
        exists: text.is_some(),
        entries: text.as_deref().map(parse_sub_ids).unwrap_or_default(),
    }
}

/// `owner:first:count` lines; comments and malformed lines skipped.
pub fn parse_sub_ids(text: &str) -> Vec<(String, u64, u64)> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|line| {
            let mut f = line.trim().split(':');
            let owner = f.next()?.to_string();
            Some((owner, f.next()?.parse().ok()?, f.next()?.parse().ok()?))
        })
        .collect()
}

/// useradd's automatic subordinate-ID range (shadow's defaults when unset).
fn useradd_range(login_defs: &str) -> (u64, u64) {
    let value = |key: &str, default: u64| {
        login_defs
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix(key)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(default)
    };
    (
        value("SUB_UID_MIN", 100_000),
        value("SUB_UID_MAX", 600_100_000),
    )
}

fn cap_eff(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Insecure hosts in a registry `config_path` (one directory per host, with hosts.toml).
fn hosts_dir(s: &Sources, dir: &Path) -> Vec<InsecureRegistry> {
    let Ok(entries) = std::fs::read_dir(s.at(dir)) else {
        return Vec::new();
    };
    let mut hosts: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    hosts.sort();
    hosts
        .iter()
        .flat_map(|host| {
            let path = dir.join(host).join("hosts.toml");
            std::fs::read_to_string(s.at(&path))
                .map(|text| containerd::hosts_toml(host, &path, &text))
                .unwrap_or_default()
        })
        .collect()
}

fn containerd_version() -> Option<String> {
    let out = std::process::Command::new("containerd")
        .arg("--version")
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn profiles(s: &Sources, containerd: Option<&ContainerdFacts>) -> Vec<ProfileFact> {
    let mut out: Vec<ProfileFact> = Vec::new();
    let named = containerd
        .into_iter()
        .flat_map(|c| c.runtimes.iter().filter(|r| r.is_stockade()))
        .map(|r| {
            let path = r.config_path.as_deref().unwrap_or(SHIM_DEFAULT_PROFILE);
            (PathBuf::from(path), Some(r.name.clone()))
        });
    let mut named: Vec<(PathBuf, Option<String>)> = named.collect();
    if named.is_empty() && s.profiles.is_empty() {
        // Not registered yet: the profiles `make install` puts in place, if any.
        named = installed_profiles(s)
            .into_iter()
            .map(|p| (p, None))
            .collect();
    }
    let extra = s.profiles.iter().map(|p| (p.clone(), None));
    for (path, handler) in named.into_iter().chain(extra) {
        if let Some(known) = out.iter_mut().find(|p| p.path == path) {
            known.handlers.extend(handler);
            continue;
        }
        // Paths from containerd's config are the node's; --profile paths are as given.
        let file = if handler.is_some() {
            s.at(&path)
        } else {
            path.clone()
        };
        out.push(ProfileFact {
            summary: Profile::load(&file).map(summary).map_err(|e| e.to_string()),
            path,
            handlers: handler.into_iter().collect(),
        });
    }
    out
}

/// `/etc/stockade/*.toml` on the node, sorted.
fn installed_profiles(s: &Sources) -> Vec<PathBuf> {
    let dir = Path::new("/etc/stockade");
    let Ok(entries) = std::fs::read_dir(s.at(dir)) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".toml"))
        .map(|name| dir.join(name))
        .collect();
    found.sort();
    found
}

fn summary(p: Profile) -> ProfileSummary {
    let mut capabilities: Vec<String> =
        p.capabilities.allow.iter().map(|c| c.to_string()).collect();
    capabilities.sort();
    let policy = &p.policy;
    let rules = [
        ("privileged", policy.privileged),
        ("host-network", policy.host_network),
        ("host-pid", policy.host_pid),
        ("host-ipc", policy.host_ipc),
        ("extra-capabilities", policy.extra_capabilities),
    ];
    ProfileSummary {
        name: p.name,
        first_id: p.userns.first_id.into(),
        size: p.userns.size.into(),
        capabilities,
        no_new_privs: p.capabilities.no_new_privs,
        log_denials: p.seccomp.log_denials,
        allowed_rules: rules
            .iter()
            .filter(|(_, v)| *v == Verdict::Allow)
            .map(|(r, _)| r.to_string())
            .collect(),
        audit_log: p.audit.log,
    }
}

fn idmap(
    s: &Sources,
    mounts: &[(PathBuf, String)],
    containerd: Option<&ContainerdFacts>,
    profiles: &[ProfileFact],
) -> Vec<IdmapFact> {
    let (root, snapshotter) = containerd.map_or_else(
        || {
            (
                PathBuf::from("/var/lib/containerd"),
                "overlayfs".to_string(),
            )
        },
        |c| (c.root.clone(), c.snapshotter.clone()),
    );
    let snapshots = root.join(format!("io.containerd.snapshotter.v1.{snapshotter}"));
    let tmpfs = ["/dev/shm", "/run"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| fs_type(mounts, p).as_deref() == Some("tmpfs"))
        .unwrap_or_else(|| PathBuf::from("/dev/shm"));
    // The probe's user namespace maps the first pod range of a profile in use.
    let first = profiles
        .iter()
        .find_map(|p| p.summary.as_ref().ok().map(|s| s.first_id))
        .unwrap_or(1 << 30);
    let userns = s.probe.then(|| {
        let range = IdRange {
            first: u32::try_from(first).unwrap_or(1 << 30),
            size: 65536,
        };
        stockade_runtime::userns::userns_fd(range).map_err(|e| e.to_string())
    });
    [
        (IdmapUse::ImageLayers, snapshots),
        (IdmapUse::Volumes, PathBuf::from("/var/lib/kubelet")),
        (IdmapUse::TmpfsVolumes, tmpfs),
    ]
    .into_iter()
    .map(|(purpose, wanted)| {
        // Not created yet: the filesystem it will be created on (a mount point exists).
        let path = wanted
            .ancestors()
            .find(|p| s.at(p).exists() || mounts.iter().any(|(m, _)| m == p))
            .unwrap_or(Path::new("/"))
            .to_path_buf();
        let probed = match &userns {
            Some(Ok(fd)) => Some(
                stockade_runtime::rootfs::idmap_supported(&s.at(&path), fd.as_fd())
                    .map_err(|e| e.to_string()),
            ),
            Some(Err(e)) => Some(Err(e.clone())),
            None => None,
        };
        IdmapFact {
            purpose,
            fs_type: fs_type(mounts, &path),
            path,
            probed,
        }
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_and_cgroup_layouts() {
        let hybrid = "sysfs /sys sysfs rw 0 0\ntmpfs /sys/fs/cgroup tmpfs rw 0 0\ncgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\ncgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0\n/dev/vda / ext4 rw 0 0\n/dev/vdb /var/lib/my\\040disk xfs rw 0 0\n";
        let m = parse_mounts(hybrid);
        assert_eq!(cgroup_version(&m), CgroupVersion::Hybrid);
        assert_eq!(
            fs_type(&m, Path::new("/var/lib/containerd")).as_deref(),
            Some("ext4")
        );
        assert_eq!(
            fs_type(&m, Path::new("/var/lib/my disk/x")).as_deref(),
            Some("xfs")
        );
        let v2 = parse_mounts("cgroup2 /sys/fs/cgroup cgroup2 rw 0 0\n");
        assert_eq!(cgroup_version(&v2), CgroupVersion::V2);
        let v1 = parse_mounts("tmpfs /sys/fs/cgroup tmpfs rw 0 0\n");
        assert_eq!(cgroup_version(&v1), CgroupVersion::V1);
        assert_eq!(cgroup_version(&[]), CgroupVersion::Unknown);
    }

    #[test]
    fn small_parsers() {
        assert!(glob_match("*.toml", "10-stockade.toml"));
        assert!(!glob_match("*.toml", "10-stockade.toml.bak"));
        assert!(glob_match("a?c", "abc"));
        assert_eq!(
            parse_sub_ids("# c\nkubelet:65536:7208960\nbroken\nalice:100000:65536\n"),
            [
                ("kubelet".to_string(), 65536, 7208960),
                ("alice".to_string(), 100000, 65536)
            ]
        );
        assert_eq!(
            yaml_top_level(
                "kind: KubeletConfiguration\ncgroupDriver: \"systemd\" # x\n",
                "cgroupDriver"
            ),
            Some("systemd".into())
        );
        assert_eq!(
            useradd_range("SUB_UID_MIN  200000\n"),
            (200_000, 600_100_000)
        );
        assert_eq!(cap_eff("CapEff:\t000001fffeffffff\n"), Some(0x1fffeffffff));
        assert_eq!(0x1fffeffffffu64 & (1 << CAP_SYS_RESOURCE), 0);
    }
}
