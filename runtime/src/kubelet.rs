//! Facts about the node's kubelet that a profile states (`[kubelet]`): its root directory
//! (volumes under `<root_dir>/pods/` are kubelet's, not hostPaths), the host IDs its
//! user-namespace manager hands to `hostUsers: false` pods, and the lowest host ID such a
//! mapping may use.
//!
//! kubelet's user-namespace range is, as kubelet computes it: the `kubelet` entry of
//! `/etc/subuid` when a user `kubelet` exists, otherwise its default, every ID from 65536
//! up. kubelet picks each pod's 65,536 IDs at random in that range, so Stockade's own pool
//! must lie outside it, or a kubelet-mapped pod (under any runtime) could share host IDs with
//! a Stockade pod. [`pool_overlap`] is that check (pure); [`kubelet_range`] reads the files.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use crate::profile::IdPoolSettings;

/// kubelet's default range without a `kubelet` entry in /etc/subuid: 65536..2^32.
pub const KUBELET_DEFAULT_FIRST: u32 = 1 << 16;
/// The IDs of one kubelet-mapped pod (kubelet's `userNsLength`).
pub const KUBELET_IDS_PER_POD: u32 = 1 << 16;

/// Where kubelet's user-namespace IDs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeletIds {
    /// As kubelet finds them: the `kubelet` entry of the subuid file, or kubelet's default.
    Subuid,
    /// Stated by the operator (kubelet's configuration on this node).
    Range { first: u32, count: u64 },
    /// kubelet on this node creates no user namespaces (its UserNamespacesSupport is off).
    None,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeletSettings {
    /// kubelet's `--root-dir`.
    pub root_dir: PathBuf,
    pub userns_ids: KubeletIds,
    /// Read when `userns_ids` is [`KubeletIds::Subuid`].
    pub subuid_file: PathBuf,
    /// The lowest host ID a kubelet-assigned mapping may map.
    pub min_host_id: u32,
}

impl Default for KubeletSettings {
    fn default() -> Self {
        KubeletSettings {
            root_dir: PathBuf::from("/var/lib/kubelet"),
            userns_ids: KubeletIds::Subuid,
            subuid_file: PathBuf::from("/etc/subuid"),
            min_host_id: KUBELET_DEFAULT_FIRST,
        }
    }
}

/// The `[kubelet]` table as written.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawKubelet {
    root_dir: Option<PathBuf>,
    userns_ids: Option<String>,
    subuid_file: Option<PathBuf>,
    min_host_id: Option<u32>,
}

/// An absolute path without `..` (for profile keys).
pub(crate) fn clean_absolute(path: &Path) -> Result<(), String> {
    if !path.is_absolute() {
        return Err(format!("{} is not an absolute path", path.display()));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(format!("{} must not contain `..`", path.display()));
    }
    Ok(())
}

impl RawKubelet {
    /// Validated settings; `Err((key, problem))` names the key under `kubelet.`.
    pub(crate) fn validate(self) -> Result<KubeletSettings, (&'static str, String)> {
        let mut s = KubeletSettings::default();
        if let Some(root) = self.root_dir {
            clean_absolute(&root).map_err(|p| ("kubelet.root_dir", p))?;
            s.root_dir = root;
        }
        if let Some(ids) = self.userns_ids {
            s.userns_ids = parse_ids(&ids).map_err(|p| ("kubelet.userns_ids", p))?;
        }
        if let Some(file) = self.subuid_file {
            clean_absolute(&file).map_err(|p| ("kubelet.subuid_file", p))?;
            s.subuid_file = file;
        }
        if let Some(min) = self.min_host_id {
            if min == 0 {
                return Err((
                    "kubelet.min_host_id",
                    "0 would let a kubelet mapping make host root the container's".into(),
                ));
            }
            s.min_host_id = min;
        }
        Ok(s)
    }
}

fn parse_ids(text: &str) -> Result<KubeletIds, String> {
    match text {
        "subuid" => return Ok(KubeletIds::Subuid),
        "none" => return Ok(KubeletIds::None),
        _ => {}
    }
    let bad =
        || format!("{text:?} is not \"subuid\", \"none\" or FIRST:COUNT (e.g. \"65536:7208960\")");
    let (first, count) = text.split_once(':').ok_or_else(bad)?;
    let first: u32 = first.parse().map_err(|_| bad())?;
    let count: u64 = count.parse().map_err(|_| bad())?;
    if count == 0 || u64::from(first) + count > 1 << 32 {
        return Err(format!(
            "{text:?}: the range must be non-empty and end at or below 4294967296"
        ));
    }
    Ok(KubeletIds::Range { first, count })
}

/// kubelet's user-namespace range, as [first, end) (end may be 2^32).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KubeletRange {
    pub first: u64,
    pub end: u64,
    /// How it was found, for messages.
    pub origin: RangeOrigin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeOrigin {
    SubuidEntry,
    KubeletDefault,
    Profile,
}

impl std::fmt::Display for KubeletRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}..{}", self.first, self.end)?;
        match self.origin {
            RangeOrigin::SubuidEntry => write!(f, " (the `kubelet` entry of the subuid file)"),
            RangeOrigin::KubeletDefault => write!(
                f,
                " (kubelet's default: no user `kubelet` with an entry in the subuid file)"
            ),
            RangeOrigin::Profile => write!(f, " (kubelet.userns_ids)"),
        }
    }
}

/// The `kubelet` entry of a subuid file's text (`name:first:count` lines), if any.
pub fn subuid_entry(text: &str) -> Option<(u32, u64)> {
    text.lines().find_map(|line| {
        let mut parts = line.trim().split(':');
        if parts.next()? != "kubelet" {
            return None;
        }
        let first = parts.next()?.parse().ok()?;
        let count = parts.next()?.parse().ok()?;
        parts.next().is_none().then_some((first, count))
    })
}

/// kubelet's range from the settings and, for [`KubeletIds::Subuid`], the subuid file's
/// text and whether a user `kubelet` exists (pure). None: kubelet makes no user namespaces.
pub fn resolve_range(
    settings: &KubeletSettings,
    subuid_text: Option<&str>,
    kubelet_user_exists: bool,
) -> Option<KubeletRange> {
    match &settings.userns_ids {
        KubeletIds::None => None,
        KubeletIds::Range { first, count } => Some(KubeletRange {
            first: u64::from(*first),
            end: u64::from(*first) + count,
            origin: RangeOrigin::Profile,
        }),
        KubeletIds::Subuid => {
            let entry = subuid_text
                .filter(|_| kubelet_user_exists)
                .and_then(subuid_entry);
            Some(match entry {
                Some((first, count)) => KubeletRange {
                    first: u64::from(first),
                    end: u64::from(first) + count,
                    origin: RangeOrigin::SubuidEntry,
                },
                None => KubeletRange {
                    first: u64::from(KUBELET_DEFAULT_FIRST),
                    end: 1 << 32,
                    origin: RangeOrigin::KubeletDefault,
                },
            })
        }
    }
}

/// kubelet's range on this node (reads the subuid file and the user database).
pub fn kubelet_range(settings: &KubeletSettings) -> Result<Option<KubeletRange>, String> {
    if settings.userns_ids != KubeletIds::Subuid {
        return Ok(resolve_range(settings, None, false));
    }
    let text = match std::fs::read_to_string(&settings.subuid_file) {
        Ok(t) => Some(t),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("reading {}: {e}", settings.subuid_file.display())),
    };
    let user = nix::unistd::User::from_name("kubelet")
        .map_err(|e| format!("looking up user `kubelet`: {e}"))?
        .is_some();
    Ok(resolve_range(settings, text.as_deref(), user))
}

/// Why Stockade's pool and kubelet's range must not overlap, if they do.
pub fn pool_overlap(pool: &IdPoolSettings, kubelet: Option<&KubeletRange>) -> Option<String> {
    let kubelet = kubelet?;
    let (first, end) = (
        u64::from(pool.first_id),
        u64::from(pool.first_id) + u64::from(pool.size),
    );
    (first < kubelet.end && kubelet.first < end).then(|| {
        format!(
            "Stockade's ID pool {first}..{end} (userns.first_id, userns.size) overlaps kubelet's \
             user-namespace range {kubelet}: a hostUsers: false pod could get host IDs of a \
             Stockade pod. Give kubelet its own range (a user `kubelet` with a line such as \
             `kubelet:65536:7208960` in /etc/subuid and /etc/subgid), or state it in \
             kubelet.userns_ids"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool() -> IdPoolSettings {
        IdPoolSettings {
            first_id: 1 << 30,
            size: 1 << 26,
            ids_per_pod: 1 << 16,
        }
    }

    #[test]
    fn ids_parse() {
        assert_eq!(parse_ids("subuid"), Ok(KubeletIds::Subuid));
        assert_eq!(parse_ids("none"), Ok(KubeletIds::None));
        assert_eq!(
            parse_ids("65536:7208960"),
            Ok(KubeletIds::Range {
                first: 65536,
                count: 7_208_960
            })
        );
        for bad in ["", "65536", "a:b", "1:0", "4294967295:2", "-1:5"] {
            assert!(parse_ids(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kubelet_default_overlaps_every_pool() {
        let s = KubeletSettings::default();
        let range = resolve_range(&s, Some(""), false).unwrap();
        assert_eq!(range.origin, RangeOrigin::KubeletDefault);
        let why = pool_overlap(&pool(), Some(&range)).unwrap();
        assert!(
            why.contains("65536..4294967296") && why.contains("default"),
            "{why}"
        );
        // An entry counts only when the user exists, as in kubelet.
        let text = "alice:100000:65536\nkubelet:65536:7208960\n";
        assert_eq!(
            resolve_range(&s, Some(text), false).unwrap().origin,
            RangeOrigin::KubeletDefault
        );
        let range = resolve_range(&s, Some(text), true).unwrap();
        assert_eq!((range.first, range.end), (65536, 65536 + 7_208_960));
        assert_eq!(pool_overlap(&pool(), Some(&range)), None);
    }

    #[test]
    fn stated_ranges_and_none() {
        let s = KubeletSettings {
            userns_ids: KubeletIds::Range {
                first: (1 << 30) + (1 << 20),
                count: 1 << 16,
            },
            ..KubeletSettings::default()
        };
        let range = resolve_range(&s, None, false).unwrap();
        assert!(pool_overlap(&pool(), Some(&range)).is_some());
        let none = KubeletSettings {
            userns_ids: KubeletIds::None,
            ..KubeletSettings::default()
        };
        assert_eq!(resolve_range(&none, None, false), None);
        assert_eq!(pool_overlap(&pool(), None), None);
    }

    #[test]
    fn subuid_lines() {
        assert_eq!(subuid_entry("kubelet:65536:65536"), Some((65536, 65536)));
        assert_eq!(subuid_entry("kubeletx:1:2\n kubelet:3:4 "), Some((3, 4)));
        assert_eq!(subuid_entry("kubelet:3"), None);
        assert_eq!(subuid_entry("kubelet:3:4:5"), None);
    }

    #[test]
    fn raw_settings_name_their_key() {
        let raw = RawKubelet {
            root_dir: Some("var/lib/kubelet".into()),
            ..RawKubelet::default()
        };
        assert_eq!(raw.validate().unwrap_err().0, "kubelet.root_dir");
        let raw = RawKubelet {
            min_host_id: Some(0),
            ..RawKubelet::default()
        };
        assert_eq!(raw.validate().unwrap_err().0, "kubelet.min_host_id");
        let raw = RawKubelet {
            userns_ids: Some("lots".into()),
            ..RawKubelet::default()
        };
        assert_eq!(raw.validate().unwrap_err().0, "kubelet.userns_ids");
        assert_eq!(
            RawKubelet::default().validate().unwrap(),
            KubeletSettings::default()
        );
    }
}
