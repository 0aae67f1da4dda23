//! OCI `linux.cgroupsPath` in its two forms, checked without touching the machine.
//!
//! - cgroupfs: an absolute path below the hierarchy root (`/stockade/<pod>/<ctr>`).
//! - systemd: `slice:prefix:name` (kubelet's `kubepods-burstable-pod<uid>.slice:cri-containerd:<id>`),
//!   the transient scope `<prefix>-<name>.scope` in `slice`. The slice name encodes its
//!   ancestors with dashes: `a-b.slice` lives in `/a.slice/a-b.slice`.

use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Which cgroup driver places a container: the node's fact, decided outside the hardener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum CgroupDriver {
    /// Stockade (libcgroups) makes and removes the cgroup directories itself.
    #[default]
    Cgroupfs,
    /// systemd makes a transient scope in a slice, over D-Bus.
    Systemd,
}

impl CgroupDriver {
    pub fn name(&self) -> &'static str {
        match self {
            CgroupDriver::Cgroupfs => "cgroupfs",
            CgroupDriver::Systemd => "systemd",
        }
    }
}

impl fmt::Display for CgroupDriver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What is wrong with a cgroupsPath or a slice name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("cgroupsPath is empty")]
    Empty,
    #[error("cgroupsPath {0:?} must be absolute, or `slice:prefix:name` for systemd")]
    NotAbsolute(String),
    #[error("cgroupsPath {0:?} must not contain `..`")]
    ParentDir(String),
    #[error("cgroupsPath {path:?}: {problem}")]
    Systemd { path: String, problem: String },
    #[error("slice {slice:?}: {problem}")]
    Slice { slice: String, problem: String },
}

/// systemd's longest unit name.
const MAX_UNIT_NAME: usize = 255;

/// A transient scope `<prefix>-<name>.scope` in `slice`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SystemdPath {
    pub slice: String,
    pub prefix: String,
    pub name: String,
}

impl SystemdPath {
    /// The scope's unit name.
    pub fn unit(&self) -> String {
        format!("{}-{}.scope", self.prefix, self.name)
    }

    /// Where systemd puts the scope, relative to the hierarchy root. Assumes the system
    /// instance of systemd, whose control root is the hierarchy root (a root shim).
    pub fn relative(&self) -> PathBuf {
        // The slice was validated at parse time, so expansion cannot fail.
        let mut dir = expand_slice(&self.slice).unwrap_or_default();
        dir.push(self.unit());
        dir
    }
}

impl fmt::Display for SystemdPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.slice, self.prefix, self.name)
    }
}

/// A checked `linux.cgroupsPath`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CgroupsPath {
    /// Absolute, without `..`; `/` itself is allowed here (callers refuse the root).
    Fs(PathBuf),
    Systemd(SystemdPath),
}

impl CgroupsPath {
    /// Parses either form: a path with `:` in it that is not absolute is the systemd form.
    pub fn parse(path: &str) -> Result<CgroupsPath, PathError> {
        if path.is_empty() {
            return Err(PathError::Empty);
        }
        if path.starts_with('/') {
            if Path::new(path)
                .components()
                .any(|c| c == Component::ParentDir)
            {
                return Err(PathError::ParentDir(path.to_string()));
            }
            return Ok(CgroupsPath::Fs(PathBuf::from(path)));
        }
        if !path.contains(':') {
            return Err(PathError::NotAbsolute(path.to_string()));
        }
        parse_systemd(path).map(CgroupsPath::Systemd)
    }

    pub fn is_systemd(&self) -> bool {
        matches!(self, CgroupsPath::Systemd(_))
    }

    /// The cgroup's directory relative to a hierarchy root (empty for the root itself).
    pub fn relative(&self) -> PathBuf {
        match self {
            CgroupsPath::Fs(p) => p
                .components()
                .filter_map(|c| match c {
                    Component::Normal(part) => Some(part),
                    _ => None,
                })
                .collect(),
            CgroupsPath::Systemd(s) => s.relative(),
        }
    }

    /// The cgroup as an absolute cgroup path (`/system.slice/x-1.scope`), as
    /// /proc/PID/cgroup shows it.
    pub fn absolute(&self) -> String {
        format!("/{}", self.relative().display())
    }
}

impl fmt::Display for CgroupsPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CgroupsPath::Fs(p) => write!(f, "{}", p.display()),
            CgroupsPath::Systemd(s) => s.fmt(f),
        }
    }
}

fn parse_systemd(path: &str) -> Result<SystemdPath, PathError> {
    let bad = |problem: &str| PathError::Systemd {
        path: path.to_string(),
        problem: problem.to_string(),
    };
    let parts: Vec<&str> = path.split(':').collect();
    let [slice, prefix, name] = parts[..] else {
        return Err(bad("the systemd form is `slice:prefix:name` (three parts)"));
    };
    // runc and libcgroups put a scope without a slice into system.slice.
    let slice = if slice.is_empty() {
        "system.slice"
    } else {
        slice
    };
    validate_slice(slice).map_err(|e| bad(&e.to_string()))?;
    for (what, part) in [("prefix", prefix), ("name", name)] {
        if part.is_empty() {
            return Err(bad(&format!("the {what} is empty")));
        }
        if let Some(c) = part.chars().find(|c| !unit_char(*c)) {
            return Err(bad(&format!(
                "the {what} {part:?} has {c:?}, which systemd unit names cannot hold"
            )));
        }
    }
    if name.ends_with(".slice") {
        return Err(bad("the name must be a scope, not a slice"));
    }
    let unit = format!("{prefix}-{name}.scope");
    if unit.len() > MAX_UNIT_NAME {
        return Err(bad(&format!(
            "the scope name {unit:?} is longer than systemd's {MAX_UNIT_NAME} bytes"
        )));
    }
    Ok(SystemdPath {
        slice: slice.to_string(),
        prefix: prefix.to_string(),
        name: name.to_string(),
    })
}

/// Characters systemd allows in unit names (`:` is the cgroupsPath separator here).
fn unit_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '\\')
}

/// Checks a slice name: `<parts joined by ->.slice`, each part non-empty, or `-.slice`
/// (the root slice).
pub fn validate_slice(slice: &str) -> Result<(), PathError> {
    expand_slice(slice).map(|_| ())
}

/// The slice's cgroup directory relative to the hierarchy root:
/// `a-b.slice` -> `a.slice/a-b.slice`, `-.slice` -> `` (the root).
pub fn expand_slice(slice: &str) -> Result<PathBuf, PathError> {
    let bad = |problem: &str| PathError::Slice {
        slice: slice.to_string(),
        problem: problem.to_string(),
    };
    let Some(stem) = slice.strip_suffix(".slice") else {
        return Err(bad("a slice name ends with `.slice`"));
    };
    if stem == "-" {
        return Ok(PathBuf::new());
    }
    if stem.is_empty() {
        return Err(bad("the name before `.slice` is empty"));
    }
    if slice.len() > MAX_UNIT_NAME {
        return Err(bad(&format!("longer than systemd's {MAX_UNIT_NAME} bytes")));
    }
    if let Some(c) = stem.chars().find(|c| !unit_char(*c) || *c == '.') {
        return Err(bad(&format!("{c:?} cannot be part of a slice name")));
    }
    let mut dir = PathBuf::new();
    let mut ancestors = String::new();
    for part in stem.split('-') {
        if part.is_empty() {
            return Err(bad(
                "empty part between dashes (a dash separates a slice from its parent)",
            ));
        }
        ancestors.push_str(part);
        dir.push(format!("{ancestors}.slice"));
        ancestors.push('-');
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_paths_are_cgroupfs() {
        let p = CgroupsPath::parse("/stockade/pod/ctr").unwrap();
        assert_eq!(p, CgroupsPath::Fs("/stockade/pod/ctr".into()));
        assert!(!p.is_systemd());
        assert_eq!(p.relative(), PathBuf::from("stockade/pod/ctr"));
        assert_eq!(p.absolute(), "/stockade/pod/ctr");
        assert_eq!(CgroupsPath::parse("/").unwrap().relative(), PathBuf::new());
        assert_eq!(
            CgroupsPath::parse("/a/../b").unwrap_err(),
            PathError::ParentDir("/a/../b".into())
        );
        assert_eq!(
            CgroupsPath::parse("relative/path").unwrap_err(),
            PathError::NotAbsolute("relative/path".into())
        );
        assert_eq!(CgroupsPath::parse("").unwrap_err(), PathError::Empty);
    }

    #[test]
    fn kubelet_systemd_paths_resolve_to_their_scope() {
        let p = CgroupsPath::parse("kubepods-burstable-pod1234.slice:cri-containerd:abc").unwrap();
        let CgroupsPath::Systemd(s) = &p else {
            panic!("{p:?}")
        };
        assert_eq!(s.unit(), "cri-containerd-abc.scope");
        assert_eq!(
            p.relative(),
            PathBuf::from(
                "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-abc.scope"
            )
        );
        assert_eq!(
            p.to_string(),
            "kubepods-burstable-pod1234.slice:cri-containerd:abc"
        );
        let sys = CgroupsPath::parse("system.slice:stockade:c1").unwrap();
        assert_eq!(sys.absolute(), "/system.slice/stockade-c1.scope");
        // No slice: system.slice, as runc and libcgroups do.
        assert_eq!(
            CgroupsPath::parse(":stockade:c1").unwrap().absolute(),
            "/system.slice/stockade-c1.scope"
        );
        assert_eq!(
            CgroupsPath::parse("-.slice:p:n").unwrap().absolute(),
            "/p-n.scope"
        );
    }

    #[test]
    fn bad_systemd_paths_say_what_is_wrong() {
        for (path, expected) in [
            ("a:b", "three parts"),
            ("a.slice:b:c:d", "three parts"),
            ("system:p:n", "ends with `.slice`"),
            ("a--b.slice:p:n", "empty part"),
            ("-a.slice:p:n", "empty part"),
            (".slice:p:n", "empty"),
            ("a/b.slice:p:n", "cannot be part"),
            ("system.slice::n", "prefix is empty"),
            ("system.slice:p:", "name is empty"),
            ("system.slice:p:a b", "unit names cannot hold"),
            ("system.slice:p:x.slice", "not a slice"),
        ] {
            let err = CgroupsPath::parse(path).unwrap_err().to_string();
            assert!(err.contains(expected), "{path}: {err}");
            assert!(err.contains(path), "{path}: {err}");
        }
        let long = format!("system.slice:p:{}", "x".repeat(300));
        assert!(CgroupsPath::parse(&long)
            .unwrap_err()
            .to_string()
            .contains("255"));
    }

    #[test]
    fn slices_expand_by_their_dashes() {
        assert_eq!(
            expand_slice("a-b-c.slice").unwrap(),
            PathBuf::from("a.slice/a-b.slice/a-b-c.slice")
        );
        assert_eq!(
            expand_slice("stockade.slice").unwrap(),
            PathBuf::from("stockade.slice")
        );
        assert_eq!(expand_slice("-.slice").unwrap(), PathBuf::new());
        assert!(validate_slice("stockade").is_err());
        assert!(validate_slice("a.b.slice").is_err());
        assert!(validate_slice("a-.slice").is_err());
    }
}
