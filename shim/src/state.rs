//! Where container state lives, and which profile a container gets.
//!
//! - libcontainer's state: `<state dir>/libcontainer/<containerd namespace>/<id>/`
//!   (`/run/stockade` on tmpfs by default: gone after a reboot, like the containers).
//! - Stockade's own record of what Create did (rootfs mounted, pod, cgroup, ID range):
//!   `<bundle>/stockade.json`, so the `delete` action can undo it after a shim crash.
//! - The spec as containerd wrote it: `<bundle>/config.orig.json` (audit); the hardened
//!   spec replaces `<bundle>/config.json`; the seccomp plan is `<bundle>/seccomp.json`.

use std::path::{Path, PathBuf};

use anyhow::Context;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::CodedInputStream;
use serde::{Deserialize, Serialize};
use stockade_runtime::idrange::IdRange;
use stockade_runtime::state_dir::StateDir;

pub const DEFAULT_PROFILE: &str = "/etc/stockade/default.toml";
/// Environment override of the profile path, e.g. for `ctr run` (set it in containerd's
/// environment; containerd passes its environment to shims).
pub const PROFILE_ENV: &str = "STOCKADE_PROFILE";
pub const RECORD_FILE: &str = "stockade.json";
pub const SECCOMP_FILE: &str = "seccomp.json";
pub const ORIGINAL_SPEC: &str = "config.orig.json";
/// Where the rootfs's idmapped layer clones are attached.
pub const ROOTFS_STAGING: &str = ".stockade-rootfs";

/// libcontainer's root directory for a containerd namespace.
pub fn libcontainer_root(state: &StateDir, namespace: &str) -> PathBuf {
    state.libcontainer().join(namespace)
}

/// What Create did, for undoing it from disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub namespace: String,
    pub sandbox_id: String,
    pub is_sandbox: bool,
    pub rootfs_mounted: bool,
    pub cgroups_path: Option<String>,
    /// The pod-level cgroup Stockade made (`<profile parent>/<sandbox>`), removed with the
    /// pod's last container; None when the spec named its own cgroup (kubelet's, ctr's).
    #[serde(default)]
    pub pod_cgroup: Option<String>,
    pub id_range: Option<IdRange>,
    pub profile: PathBuf,
}

impl Record {
    pub fn save(&self, bundle: &Path) -> anyhow::Result<()> {
        let path = bundle.join(RECORD_FILE);
        let tmp = bundle.join(format!("{RECORD_FILE}.tmp"));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).with_context(|| format!("writing {}", path.display()))
    }

    pub fn load(bundle: &Path) -> anyhow::Result<Option<Record>> {
        let path = bundle.join(RECORD_FILE);
        match std::fs::read(&path) {
            Ok(b) => Ok(Some(
                serde_json::from_slice(&b)
                    .with_context(|| format!("parsing {}", path.display()))?,
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }
}

/// The profile path containerd's runtime options name (`ConfigPath`), if any.
///
/// containerd 1.6's CRI plugin passes the `options` table of a runtime whose type is not
/// runc as `cri.runtimeoptions.v1.Options { type_url = 1, config_path = 2 }`; containerd
/// hands it to the shim on `start`'s stdin and, when the task has no options of its own,
/// in CreateTaskRequest.options.
///
/// Options of that type that cannot be decoded are an error, not "no profile": falling back
/// to another profile would silently harden with the wrong one.
pub fn config_path_from_options(any: &Any) -> anyhow::Result<Option<PathBuf>> {
    if !any.type_url.ends_with("runtimeoptions.v1.Options") {
        return Ok(None);
    }
    let bad =
        |what: String| anyhow::anyhow!("runtime options {}: cannot decode: {what}", any.type_url);
    let mut input = CodedInputStream::from_bytes(&any.value);
    let mut found = None;
    while let Some(tag) = input
        .read_raw_tag_or_eof()
        .map_err(|e| bad(e.to_string()))?
    {
        let (field, wire) = (tag >> 3, tag & 7);
        if field == 2 && wire == 2 {
            let path = input
                .read_string()
                .map_err(|e| bad(format!("ConfigPath: {e}")))?;
            found = Some(path).filter(|s| !s.is_empty());
        } else {
            let wt = wire_type(wire).map_err(|()| bad(format!("wire type {wire}")))?;
            input.skip_field(wt).map_err(|e| bad(e.to_string()))?;
        }
    }
    Ok(found.map(PathBuf::from))
}

fn wire_type(v: u32) -> Result<containerd_shim_protos::protobuf::rt::WireType, ()> {
    containerd_shim_protos::protobuf::rt::WireType::new(v).ok_or(())
}

/// The profile for a new container: runtime options, then `$STOCKADE_PROFILE`, then the
/// default path. It must be absolute: the shim runs in the bundle, not where the path was
/// written.
pub fn profile_path(options: Option<&Any>) -> anyhow::Result<PathBuf> {
    let (path, from) = match options.map(config_path_from_options).transpose()?.flatten() {
        Some(p) => (p, "the runtime options' ConfigPath"),
        None => match std::env::var_os(PROFILE_ENV) {
            Some(p) => (PathBuf::from(p), "$STOCKADE_PROFILE"),
            None => (PathBuf::from(DEFAULT_PROFILE), "the default"),
        },
    };
    if !path.is_absolute() {
        anyhow::bail!(
            "profile {} (from {from}) is not an absolute path",
            path.display()
        );
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_config_path_from_cri_runtime_options() {
        // field 1 "x", field 2 "/etc/stockade/strict.toml"
        let path = b"/etc/stockade/strict.toml";
        let mut value = vec![0x0a, 1, b'x', 0x12, path.len() as u8];
        value.extend_from_slice(path);
        let any = Any {
            type_url: "cri.runtimeoptions.v1.Options".into(),
            value,
            ..Default::default()
        };
        assert_eq!(
            config_path_from_options(&any).unwrap(),
            Some(PathBuf::from("/etc/stockade/strict.toml"))
        );
        assert_eq!(
            profile_path(Some(&any)).unwrap(),
            PathBuf::from("/etc/stockade/strict.toml")
        );
        let other = Any {
            type_url: "containerd.runc.v1.Options".into(),
            ..any
        };
        assert_eq!(config_path_from_options(&other).unwrap(), None);
    }

    #[test]
    fn malformed_runtime_options_are_errors() {
        let options = |value: Vec<u8>| Any {
            type_url: "cri.runtimeoptions.v1.Options".into(),
            value,
            ..Default::default()
        };
        // A string field longer than the message; an invalid wire type; not UTF-8.
        for value in [
            vec![0x12, 50, b'/'],
            vec![0x0f, 1],
            vec![0x12, 2, 0xff, 0xfe],
        ] {
            let e = config_path_from_options(&options(value.clone())).unwrap_err();
            assert!(
                format!("{e:#}").contains("runtimeoptions.v1.Options: cannot decode"),
                "{value:?}: {e:#}"
            );
        }
        // A relative path: relative to the bundle, where the shim runs, not to the operator.
        let relative = b"profiles/default.toml";
        let mut value = vec![0x12, relative.len() as u8];
        value.extend_from_slice(relative);
        let e = profile_path(Some(&options(value))).unwrap_err().to_string();
        assert!(
            e.contains("profiles/default.toml")
                && e.contains("ConfigPath")
                && e.contains("not an absolute path"),
            "{e}"
        );
    }
}
