//! Parsing containerd's rootfs mounts into what to mount, before anything is touched.

use std::path::{Component, PathBuf};

use super::{RootfsError, RootfsMount};

/// What to mount, parsed and checked before anything is touched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Plan {
    Overlay {
        /// Top-most first, as in `lowerdir=`.
        lowers: Vec<PathBuf>,
        /// Upper and work dir; None for a read-only view.
        upper: Option<(PathBuf, PathBuf)>,
        /// Other overlay options: `key=value` or a flag.
        extra: Vec<(String, Option<String>)>,
        attrs: u64,
    },
    Bind {
        source: PathBuf,
        recursive: bool,
        attrs: u64,
    },
}

/// Options that are generic mount flags; they become mount attributes.
fn mount_flag(option: &str) -> Option<u64> {
    Some(match option {
        "ro" => libc::MOUNT_ATTR_RDONLY,
        "nosuid" => libc::MOUNT_ATTR_NOSUID,
        "nodev" => libc::MOUNT_ATTR_NODEV,
        "noexec" => libc::MOUNT_ATTR_NOEXEC,
        "noatime" => libc::MOUNT_ATTR_NOATIME,
        "nodiratime" => libc::MOUNT_ATTR_NODIRATIME,
        "strictatime" => libc::MOUNT_ATTR_STRICTATIME,
        "rw" | "suid" | "dev" | "exec" | "relatime" | "atime" | "diratime" | "async" => 0,
        _ => return None,
    })
}

/// Overlay options passed through as they are (anything else is refused by name).
const OVERLAY_PASSTHROUGH: &[&str] = &[
    "index",
    "metacopy",
    "redirect_dir",
    "xino",
    "nfs_export",
    "volatile",
    "userxattr",
    "uuid",
];

fn absolute_path(value: &str, what: &str) -> Result<PathBuf, RootfsError> {
    let path = PathBuf::from(value);
    if value.is_empty() {
        return Err(RootfsError::Invalid(format!("{what} is empty")));
    }
    if !path.is_absolute() || path.components().any(|c| c == Component::ParentDir) {
        return Err(RootfsError::Invalid(format!(
            "{what} {value:?} must be an absolute path without `..`"
        )));
    }
    Ok(path)
}

pub(super) fn plan(mounts: &[RootfsMount]) -> Result<Plan, RootfsError> {
    let mount = match mounts {
        [] => {
            return Err(RootfsError::Invalid(
                "no rootfs mounts given (expected one overlay or bind mount)".into(),
            ))
        }
        [one] => one,
        more => {
            return Err(RootfsError::Invalid(format!(
                "{} rootfs mounts given; Stockade mounts exactly one overlay or bind mount",
                more.len()
            )))
        }
    };
    let kind = mount.kind.as_str();
    let bad = |option: &str, problem: &str| {
        RootfsError::Invalid(format!("{kind} mount option {option:?}: {problem}"))
    };
    match kind {
        "overlay" => {
            let (mut lowers, mut upper, mut work, mut extra, mut attrs) =
                (None, None, None, Vec::new(), 0);
            for option in &mount.options {
                if let Some(flag) = mount_flag(option) {
                    attrs |= flag;
                    continue;
                }
                let (key, value) = match option.split_once('=') {
                    Some((k, v)) => (k, Some(v)),
                    None => (option.as_str(), None),
                };
                match (key, value) {
                    ("lowerdir", Some(v)) => {
                        if lowers.is_some() {
                            return Err(bad(option, "lowerdir given twice"));
                        }
                        if v.contains('\\') {
                            return Err(bad(option, "escaped lowerdir paths are not supported"));
                        }
                        let layers = v
                            .split(':')
                            .map(|l| {
                                if l.is_empty() {
                                    Err(bad(
                                        option,
                                        "empty layer (or data-only `::` layers, not supported)",
                                    ))
                                } else {
                                    absolute_path(l, "lower layer")
                                }
                            })
                            .collect::<Result<Vec<_>, _>>()?;
                        lowers = Some(layers);
                    }
                    ("upperdir", Some(v)) => upper = Some(absolute_path(v, "upperdir")?),
                    ("workdir", Some(v)) => work = Some(absolute_path(v, "workdir")?),
                    (k, v) if OVERLAY_PASSTHROUGH.contains(&k) => {
                        extra.push((k.to_string(), v.map(str::to_string)));
                    }
                    _ => return Err(bad(option, "unknown overlay option")),
                }
            }
            let lowers = lowers.ok_or_else(|| {
                RootfsError::Invalid("overlay mount has no lowerdir option (no layers)".into())
            })?;
            let upper = match (upper, work) {
                (Some(u), Some(w)) => Some((u, w)),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(RootfsError::Invalid(
                        "overlay mount has upperdir but no workdir".into(),
                    ))
                }
                (None, Some(_)) => {
                    return Err(RootfsError::Invalid(
                        "overlay mount has workdir but no upperdir".into(),
                    ))
                }
            };
            Ok(Plan::Overlay {
                lowers,
                upper,
                extra,
                attrs,
            })
        }
        "bind" | "rbind" => {
            let mut recursive = kind == "rbind";
            let mut attrs = 0;
            for option in &mount.options {
                match option.as_str() {
                    "bind" => {}
                    "rbind" => recursive = true,
                    o => attrs |= mount_flag(o).ok_or_else(|| bad(o, "unknown bind option"))?,
                }
            }
            Ok(Plan::Bind {
                source: absolute_path(&mount.source, "bind source")?,
                recursive,
                attrs,
            })
        }
        other => Err(RootfsError::Invalid(format!(
            "rootfs mount type {other:?} is not supported (overlay or bind)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(kind: &str, source: &str, options: &[&str]) -> Vec<RootfsMount> {
        vec![RootfsMount {
            kind: kind.into(),
            source: source.into(),
            options: options.iter().map(|s| s.to_string()).collect(),
        }]
    }

    #[test]
    fn overlay_options_parse() {
        let p = plan(&m(
            "overlay",
            "overlay",
            &[
                "index=off",
                "lowerdir=/l/2:/l/1",
                "upperdir=/u",
                "workdir=/w",
                "ro",
                "userxattr",
            ],
        ))
        .unwrap();
        assert_eq!(
            p,
            Plan::Overlay {
                lowers: vec!["/l/2".into(), "/l/1".into()],
                upper: Some(("/u".into(), "/w".into())),
                extra: vec![
                    ("index".into(), Some("off".into())),
                    ("userxattr".into(), None)
                ],
                attrs: libc::MOUNT_ATTR_RDONLY,
            }
        );
    }

    #[test]
    fn bind_options_parse() {
        let p = plan(&m("bind", "/snap/fs", &["rbind", "ro"])).unwrap();
        assert_eq!(
            p,
            Plan::Bind {
                source: "/snap/fs".into(),
                recursive: true,
                attrs: libc::MOUNT_ATTR_RDONLY
            }
        );
    }

    #[test]
    fn bad_mounts_say_what_is_wrong() {
        let cases: &[(Vec<RootfsMount>, &str)] = &[
            (vec![], "no rootfs mounts"),
            (
                m("overlay", "overlay", &["upperdir=/u", "workdir=/w"]),
                "no lowerdir",
            ),
            (m("overlay", "overlay", &["lowerdir="]), "empty"),
            (m("overlay", "overlay", &["lowerdir=/a::/b"]), "empty layer"),
            (m("overlay", "overlay", &["lowerdir=a/b"]), "absolute"),
            (m("overlay", "overlay", &["lowerdir=/a/../b"]), "absolute"),
            (
                m("overlay", "overlay", &["lowerdir=/a", "upperdir=/u"]),
                "no workdir",
            ),
            (
                m("overlay", "overlay", &["lowerdir=/a", "frob=1"]),
                "unknown overlay option",
            ),
            (m("bind", "/x", &["rbind", "shared"]), "unknown bind option"),
            (m("bind", "x", &["rbind"]), "absolute"),
            (m("tmpfs", "tmpfs", &[]), "not supported"),
        ];
        for (mounts, expected) in cases {
            let err = plan(mounts).unwrap_err().to_string();
            assert!(err.contains(expected), "{mounts:?}: {err}");
        }
        let two = [m("bind", "/a", &[]), m("bind", "/b", &[])].concat();
        assert!(plan(&two)
            .unwrap_err()
            .to_string()
            .contains("2 rootfs mounts"));
    }
}
