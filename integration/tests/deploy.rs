//! deploy/: the containerd snippet is accepted by the installed containerd and the
//! RuntimeClass handlers match its runtime names.

use std::process::Command;
use stockade_integration::paths::workspace_root;

#[test]
fn containerd_accepts_the_snippet() {
    let snippet =
        std::fs::read_to_string(workspace_root().join("deploy/containerd-stockade.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, format!("version = 2\n{snippet}")).unwrap();
    let out = Command::new("containerd")
        .arg("--config")
        .arg(&config)
        .args(["config", "dump"])
        .output()
        .expect("containerd is installed");
    let dump = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: toml::Table = toml::from_str(&dump).unwrap();
    let runtimes = &doc["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"];
    for (name, profile) in [
        ("stockade", "/etc/stockade/default.toml"),
        ("stockade-strict", "/etc/stockade/strict.toml"),
    ] {
        let rt = &runtimes[name];
        assert_eq!(
            rt["runtime_type"].as_str(),
            Some("io.containerd.stockade.v1"),
            "{name}"
        );
        assert_eq!(
            rt["options"]["ConfigPath"].as_str(),
            Some(profile),
            "{name}"
        );
    }
    // runc stays the default runtime.
    assert!(runtimes.get("runc").is_some());
}

#[test]
fn runtimeclass_handlers_match_the_runtimes() {
    let yaml = std::fs::read_to_string(workspace_root().join("deploy/runtimeclass.yaml")).unwrap();
    let handlers: Vec<&str> = yaml
        .lines()
        .filter_map(|l| l.trim().strip_prefix("handler:"))
        .map(str::trim)
        .collect();
    assert_eq!(handlers, ["stockade", "stockade-strict"]);
    assert_eq!(yaml.matches("kind: RuntimeClass").count(), 2);
    assert_eq!(yaml.matches("apiVersion: node.k8s.io/v1").count(), 2);
}
