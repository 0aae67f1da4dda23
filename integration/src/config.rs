//! The config file of a private containerd: version 2 for containerd 1.x, version 3 for
//! 2.x. Only what this machine and the harness need is set; everything else keeps the
//! containerd's own defaults (for 2.x that includes `enable_unprivileged_ports` and
//! `enable_unprivileged_icmp`, which are on: what production nodes run).

use crate::binaries::ConfigVersion;
use crate::containerd::{
    HANDLER_STOCKADE, HANDLER_STOCKADE_RECORD, HANDLER_STOCKADE_STRICT, RUNC_RUNTIME,
    STOCKADE_RUNTIME,
};
use crate::image::PAUSE_IMAGE;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Directory of the CNI plugins (Debian's containernetworking-plugins).
pub const CNI_BIN_DIR: &str = "/usr/lib/cni";

/// What a private instance's config names.
#[derive(Debug, Clone)]
pub struct InstanceConfig {
    /// The instance's temp dir (ttrpc socket, opt and CNI config live below).
    pub dir: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    /// Where runc keeps its state (`Root` of the runc handler).
    pub runc_root: PathBuf,
    pub socket: PathBuf,
    /// The Stockade profiles the two handlers use (default.toml, strict.toml).
    pub profiles: PathBuf,
    /// Register the CRI handlers `stockade` and `stockade-strict` (off for tests that
    /// bring their own registration, e.g. deploy/'s snippets or the node installer).
    pub stockade_runtimes: bool,
}

/// Every pod and container annotation reaches the spec (the worst case an operator can
/// configure): the security suite checks that none of them changes a decision.
const PASSTHROUGH: &str = "pod_annotations = [\"*\"]\n  container_annotations = [\"*\"]";

/// A path as a TOML basic string. Paths here are ours (no quotes or backslashes), and
/// Debug formatting gives a TOML-compatible string for them.
pub fn toml_str(p: &Path) -> String {
    format!("{:?}", p.display().to_string())
}

impl InstanceConfig {
    pub fn render(&self, version: ConfigVersion) -> String {
        match version {
            ConfigVersion::V2 => self.render_v2(),
            ConfigVersion::V3 => self.render_v3(),
        }
    }

    fn common_header(&self, version: u32, disabled: &str) -> String {
        format!(
            r#"version = {version}
root = {root}
state = {state}
disabled_plugins = [{disabled}]

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[debug]
  level = "debug"
"#,
            root = toml_str(&self.root),
            state = toml_str(&self.state),
            socket = toml_str(&self.socket),
            ttrpc = toml_str(&self.dir.join("containerd.sock.ttrpc")),
        )
    }

    /// The runtime tables below `prefix` (`...containerd.runtimes`).
    fn runtimes(&self, prefix: &str) -> String {
        let mut s = format!(
            r#"
[{prefix}.runc]
  runtime_type = "{RUNC_RUNTIME}"
  {PASSTHROUGH}

[{prefix}.runc.options]
  Root = {runc_root}
  SystemdCgroup = false
"#,
            runc_root = toml_str(&self.runc_root),
        );
        if self.stockade_runtimes {
            for (handler, profile) in [
                (HANDLER_STOCKADE, "default.toml"),
                (HANDLER_STOCKADE_STRICT, "strict.toml"),
                (HANDLER_STOCKADE_RECORD, "record.toml"),
            ] {
                let _ = write!(
                    s,
                    r#"
[{prefix}.{handler}]
  runtime_type = "{STOCKADE_RUNTIME}"
  {PASSTHROUGH}

[{prefix}.{handler}.options]
  ConfigPath = {profile}
"#,
                    profile = toml_str(&self.profiles.join(profile)),
                );
            }
        }
        s
    }

    fn render_v2(&self) -> String {
        let cri = r#"plugins."io.containerd.grpc.v1.cri""#;
        let mut s = self.common_header(
            2,
            r#""io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs""#,
        );
        let _ = write!(
            s,
            r#"
[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to start.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"
{runtimes}
[{cri}.cni]
  bin_dir = "{CNI_BIN_DIR}"
  conf_dir = {cni_conf}
  max_conf_num = 1
"#,
            opt = toml_str(&self.dir.join("opt")),
            runtimes = self.runtimes(&format!("{cri}.containerd.runtimes")),
            cni_conf = toml_str(&self.dir.join("cni/net.d")),
        );
        s
    }

    fn render_v3(&self) -> String {
        let rt = "plugins.'io.containerd.cri.v1.runtime'";
        let images = "plugins.'io.containerd.cri.v1.images'";
        // NRI listens on a machine-wide socket (/var/run/nri/nri.sock): not in a private
        // instance.
        let mut s = self.common_header(
            3,
            r#""io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.nri.v1.nri""#,
        );
        let _ = write!(
            s,
            r#"
[plugins.'io.containerd.internal.v1.opt']
  path = {opt}

[{images}]
  snapshotter = "overlayfs"

[{images}.pinned_images]
  sandbox = "{PAUSE_IMAGE}"

[{rt}]
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to start.
  restrict_oom_score_adj = true
  enable_selinux = false
  disable_apparmor = true
  # Pod network namespaces below our state dir, not in the node's /var/run/netns.
  netns_mounts_under_state_dir = true

[{rt}.containerd]
  default_runtime_name = "runc"
{runtimes}
[{rt}.cni]
  bin_dirs = ["{CNI_BIN_DIR}"]
  conf_dir = {cni_conf}
  max_conf_num = 1

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
"#,
            opt = toml_str(&self.dir.join("opt")),
            runtimes = self.runtimes(&format!("{rt}.containerd.runtimes")),
            cni_conf = toml_str(&self.dir.join("cni/net.d")),
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(stockade: bool) -> InstanceConfig {
        let dir = PathBuf::from("/tmp/x");
        InstanceConfig {
            root: dir.join("root"),
            state: dir.join("state"),
            runc_root: dir.join("runc"),
            socket: dir.join("containerd.sock"),
            profiles: PathBuf::from("/p"),
            dir,
            stockade_runtimes: stockade,
        }
    }

    fn runtimes(doc: &toml::Table, version: ConfigVersion) -> Vec<String> {
        let plugin = match version {
            ConfigVersion::V2 => "io.containerd.grpc.v1.cri",
            ConfigVersion::V3 => "io.containerd.cri.v1.runtime",
        };
        doc["plugins"][plugin]["containerd"]["runtimes"]
            .as_table()
            .unwrap()
            .keys()
            .cloned()
            .collect()
    }

    #[test]
    fn both_versions_parse_and_name_the_handlers() {
        for version in [ConfigVersion::V2, ConfigVersion::V3] {
            let doc: toml::Table = toml::from_str(&config(true).render(version)).unwrap();
            assert_eq!(
                runtimes(&doc, version),
                ["runc", "stockade", "stockade-record", "stockade-strict"],
                "{version:?}"
            );
            let doc: toml::Table = toml::from_str(&config(false).render(version)).unwrap();
            assert_eq!(runtimes(&doc, version), ["runc"], "{version:?}");
        }
    }

    #[test]
    fn runc_keeps_its_state_in_the_configured_root() {
        let mut cfg = config(false);
        cfg.runc_root = PathBuf::from("/tmp/x/run/runc");
        for version in [ConfigVersion::V2, ConfigVersion::V3] {
            let text = cfg.render(version);
            assert!(
                text.contains("Root = \"/tmp/x/run/runc\""),
                "{version:?}: {text}"
            );
        }
    }

    #[test]
    fn v3_keeps_containerd_2_cri_defaults() {
        let text = config(true).render(ConfigVersion::V3);
        assert!(!text.contains("enable_unprivileged"), "{text}");
        assert!(text.contains("io.containerd.nri.v1.nri"), "{text}");
    }
}
