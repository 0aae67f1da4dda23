//! The `-info` action: what this runtime supports, in the OCI runtime-spec `features` form
//! that `runc features` prints, so containerd's CRI can tell which pods it may send:
//! recursive read-only mounts (`rro` among the mount options), user namespaces (`user`
//! among the namespaces together with idmapped mounts).

use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::types::introspection::RuntimeInfo;
use stockade_runtime::oci_spec::runtime::{
    Arch, Cgroup, Features, IDMap, LinuxFeature, LinuxNamespaceType, LinuxSeccompAction,
    MountExtensions, Seccomp,
};

use crate::RUNTIME_ID;

/// How containerd names the Features type (`typeurl` registration in containerd).
pub const FEATURES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/features/Features";

/// Mount options libcontainer applies, plus the recursive (`mount_setattr`) ones.
fn mount_options() -> Vec<String> {
    let mut options = libcontainer::syscall::linux::MountOption::known_options();
    for recursive in [
        "rro",
        "rrw",
        "rnosuid",
        "rsuid",
        "rnodev",
        "rdev",
        "rnoexec",
        "rexec",
        "rnodiratime",
        "rdiratime",
        "rrelatime",
        "rnorelatime",
        "rnoatime",
        "ratime",
        "rstrictatime",
        "rnostrictatime",
        "rnosymfollow",
        "rsymfollow",
    ] {
        options.push(recursive.to_string());
    }
    options
}

pub fn features() -> Features {
    let namespaces = vec![
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Cgroup,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::User,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Network,
    ];
    let capabilities = caps::all().iter().map(|c| c.to_string()).collect();
    let mut cgroup = Cgroup::default();
    cgroup.set_v1(Some(true));
    cgroup.set_v2(Some(true));
    let mut seccomp = Seccomp::default();
    seccomp.set_enabled(Some(true));
    seccomp.set_actions(Some(vec![
        LinuxSeccompAction::ScmpActAllow,
        LinuxSeccompAction::ScmpActErrno,
        LinuxSeccompAction::ScmpActKill,
        LinuxSeccompAction::ScmpActKillProcess,
        LinuxSeccompAction::ScmpActKillThread,
        LinuxSeccompAction::ScmpActLog,
        LinuxSeccompAction::ScmpActTrap,
    ]));
    seccomp.set_archs(Some(vec![
        Arch::ScmpArchX86_64,
        Arch::ScmpArchX86,
        Arch::ScmpArchAarch64,
        Arch::ScmpArchArm,
    ]));
    let mut idmap = IDMap::default();
    idmap.set_enabled(Some(true));
    let mut mount_extensions = MountExtensions::default();
    mount_extensions.set_idmap(Some(idmap));
    let mut linux = LinuxFeature::default();
    linux.set_namespaces(Some(namespaces));
    linux.set_capabilities(Some(capabilities));
    linux.set_cgroup(Some(cgroup));
    linux.set_seccomp(Some(seccomp));
    linux.set_mount_extensions(Some(mount_extensions));
    let mut features = Features::default();
    features.set_oci_version_min("1.0.0".to_string());
    features.set_oci_version_max("1.2.0".to_string());
    features.set_mount_options(Some(mount_options()));
    features.set_linux(Some(linux));
    features
}

pub fn runtime_info() -> anyhow::Result<RuntimeInfo> {
    let features = Any {
        type_url: FEATURES_TYPE_URL.to_string(),
        value: serde_json::to_vec(&features())?,
        ..Default::default()
    };
    Ok(RuntimeInfo {
        name: RUNTIME_ID.to_string(),
        features: Some(features).into(),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The fields containerd 2.x's CRI reads, in the JSON it decodes.
    #[test]
    fn info_carries_what_containerd_checks_for_rro_and_user_namespaces() {
        let info = runtime_info().unwrap();
        let any = info.features.as_ref().unwrap();
        assert_eq!(any.type_url, FEATURES_TYPE_URL);
        let json: serde_json::Value = serde_json::from_slice(&any.value).unwrap();
        let options = json["mountOptions"].as_array().unwrap();
        assert!(options.iter().any(|o| o == "rro"), "{options:?}");
        let namespaces = json["linux"]["namespaces"].as_array().unwrap();
        assert!(namespaces.iter().any(|n| n == "user"), "{namespaces:?}");
        assert_eq!(json["linux"]["mountExtensions"]["idmap"]["enabled"], true);
        assert!(json["linux"]["capabilities"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c == "CAP_NET_BIND_SERVICE"));
    }
}
