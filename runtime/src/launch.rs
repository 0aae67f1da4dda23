//! Pure spec rewrites that fit a hardened spec to how the shim launches it with
//! libcontainer. No I/O: the shim carries out what these return.

use crate::oci_spec::runtime::{LinuxNamespaceType, Mount, Spec};
use std::path::PathBuf;

/// Remove a network namespace *path* from the spec and return it: the zygote enters it
/// and the container inherits it (the shim's `in_netns`).
pub fn take_netns_path(spec: &mut Spec) -> Option<PathBuf> {
    let mut linux = spec.linux().clone()?;
    let mut namespaces = linux.namespaces().clone()?;
    let pos = namespaces
        .iter()
        .position(|n| n.typ() == LinuxNamespaceType::Network && n.path().is_some())?;
    let path = namespaces.remove(pos).path().clone();
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
    sysfs_to_bind(spec);
    path
}

/// sysfs belongs to the network namespace's user namespace: a container whose netns is the
/// host's (CRI's pod netns) cannot mount it from inside its own user namespace (EPERM).
/// Like runc in that case, bind the host's /sys read-only instead.
fn sysfs_to_bind(spec: &mut Spec) {
    let Some(mounts) = spec.mounts().clone() else {
        return;
    };
    let mounts: Vec<Mount> = mounts
        .into_iter()
        .map(|mut m| {
            if m.typ().as_deref() == Some("sysfs") {
                m.set_typ(Some("bind".into()));
                m.set_source(Some(PathBuf::from("/sys")));
                m.set_options(Some(
                    ["rbind", "nosuid", "noexec", "nodev", "ro"]
                        .map(String::from)
                        .to_vec(),
                ));
            }
            m
        })
        .collect();
    spec.set_mounts(Some(mounts));
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn spec(json: serde_json::Value) -> Spec {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn netns_path_is_taken_and_sysfs_becomes_a_bind() {
        let mut s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "mounts": [
                {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["ro"]},
                {"destination": "/proc", "type": "proc", "source": "proc"}
            ],
            "linux": {"namespaces": [
                {"type": "user"},
                {"type": "network", "path": "/var/run/netns/cni-1"},
                {"type": "ipc"}
            ]}
        }));
        assert_eq!(
            take_netns_path(&mut s),
            Some(PathBuf::from("/var/run/netns/cni-1"))
        );
        let ns = s.linux().as_ref().unwrap().namespaces().clone().unwrap();
        assert_eq!(ns.len(), 2);
        let sys = &s.mounts().as_ref().unwrap()[0];
        assert_eq!(sys.typ().as_deref(), Some("bind"));
        assert_eq!(sys.source().as_deref(), Some(Path::new("/sys")));
        assert!(sys.options().as_ref().unwrap().iter().any(|o| o == "ro"));
        assert_eq!(
            s.mounts().as_ref().unwrap()[1].typ().as_deref(),
            Some("proc")
        );
    }

    #[test]
    fn a_new_netns_stays_in_the_spec() {
        let mut s = spec(serde_json::json!({
            "ociVersion": "1.0.2",
            "mounts": [{"destination": "/sys", "type": "sysfs", "source": "sysfs"}],
            "linux": {"namespaces": [{"type": "network"}]}
        }));
        assert_eq!(take_netns_path(&mut s), None);
        assert_eq!(
            s.linux()
                .as_ref()
                .unwrap()
                .namespaces()
                .as_ref()
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            s.mounts().as_ref().unwrap()[0].typ().as_deref(),
            Some("sysfs")
        );
    }
}
