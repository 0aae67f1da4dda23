//! `stockade node check` over fixture nodes (tests/fixtures/node/: /proc, /etc and /var
//! files of a hardened and of a weak node), as a table and as JSON, and on this machine.

mod common;

use common::{profile_copy, root};
use std::path::Path;
use std::process::{Command, Output};

/// A fixture node in a temp dir, with the shipped profiles (and a loose one) in
/// /etc/stockade.
fn node(fixture: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(
        &root().join("cli/tests/fixtures/node").join(fixture),
        tmp.path(),
    );
    let profiles = tmp.path().join("etc/stockade");
    std::fs::create_dir_all(&profiles).unwrap();
    let default = profile_copy(&profiles, "default.toml");
    profile_copy(&profiles, "strict.toml");
    let loose = std::fs::read_to_string(&default)
        .unwrap()
        .replace("name = \"default\"", "name = \"loose\"")
        .replace("host_network = \"deny\"", "host_network = \"allow\"")
        .replace("allow = [\"CHOWN\",", "allow = [\"SYS_ADMIN\", \"CHOWN\",");
    std::fs::write(profiles.join("loose.toml"), loose).unwrap();
    tmp
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn check(root: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stockade"))
        .args(["node", "check", "--root"])
        .arg(root)
        .args(extra)
        .output()
        .unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// check name -> statuses of its findings.
fn statuses(doc: &serde_json::Value) -> Vec<(String, String)> {
    doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["check"].as_str().unwrap().to_string(),
                f["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn status_of<'a>(all: &'a [(String, String)], check: &str) -> Vec<&'a str> {
    all.iter()
        .filter(|(c, _)| c == check)
        .map(|(_, s)| s.as_str())
        .collect()
}

#[test]
fn a_hardened_node_passes() {
    let tmp = node("hardened");
    let out = check(tmp.path(), &["--json"]);
    let doc = json(&out);
    assert_eq!(out.status.code(), Some(0), "{doc:#}");
    let all = statuses(&doc);
    let bad: Vec<_> = all
        .iter()
        .filter(|(_, s)| s == "warn" || s == "fail")
        .collect();
    assert!(bad.is_empty(), "{bad:?}\n{doc:#}");
    // Both profiles of the drop-in were found through the import and judged.
    for p in ["default", "strict"] {
        let check = format!(
            "profile.{}",
            Path::new("/etc/stockade")
                .join(format!("{p}.toml"))
                .display()
        );
        assert_eq!(status_of(&all, &check), ["ok"], "{check}");
    }
    assert_eq!(status_of(&all, "ids.subuid"), ["ok"]);
    assert_eq!(status_of(&all, "containerd.stockade_runtime"), ["ok"]);
    let facts = &doc["facts"];
    assert_eq!(facts["kernel"]["release"], "6.8.0-45-generic");
    assert_eq!(facts["cgroup"]["version"], "v2");
    assert_eq!(
        facts["containerd"]["files"][1][0],
        "/etc/containerd/conf.d/stockade.toml"
    );
    // A fixture is never probed: the version table decides.
    assert!(
        facts["idmap"][0]["probed"].is_null(),
        "{:#}",
        facts["idmap"]
    );
    assert_eq!(doc["summary"]["fail"], 0);
}

#[test]
fn a_weak_node_fails_with_why_and_fix_for_each_finding() {
    let tmp = node("weak");
    let out = check(tmp.path(), &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc = json(&out);
    let all = statuses(&doc);
    let expect = [
        ("kernel.user_namespaces", "warn"),
        ("kernel.kptr_restrict", "warn"),
        ("kernel.dmesg_restrict", "warn"),
        ("kernel.perf_event_paranoid", "warn"),
        ("kernel.unprivileged_bpf_disabled", "warn"),
        ("net.core.bpf_jit_harden", "warn"),
        ("kernel.overlay_lowerdir_plus", "info"),
        ("idmap.tmpfs", "warn"),
        ("containerd.privileged_without_host_devices", "warn"),
        ("containerd.restrict_oom_score_adj", "fail"),
        ("containerd.enable_unprivileged_ports", "info"),
        ("cgroup.version", "warn"),
        ("cgroup.driver", "fail"),
        ("ids.subuid", "fail"),
        ("profile./etc/stockade/loose.toml", "warn"),
    ];
    for (check, status) in expect {
        assert_eq!(status_of(&all, check), [status], "{check}: {all:?}");
    }
    assert_eq!(
        status_of(&all, "containerd.insecure_registries"),
        ["warn", "warn"]
    );
    for f in doc["findings"].as_array().unwrap() {
        if f["status"] != "ok" {
            assert!(
                !f["why"].as_str().unwrap().is_empty() && !f["fix"].as_str().unwrap().is_empty(),
                "{f}"
            );
        }
    }
    let subuid = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "ids.subuid")
        .unwrap();
    assert!(
        subuid["observed"]
            .as_str()
            .unwrap()
            .contains("kubelet:1073741824:7208960"),
        "{subuid}"
    );
    let loose = doc["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["check"] == "profile./etc/stockade/loose.toml")
        .unwrap();
    let observed = loose["observed"].as_str().unwrap();
    assert!(
        observed.contains("SYS_ADMIN") && observed.contains("host-network"),
        "{observed}"
    );

    // The table says the same, with why and fix under each finding that is not ok.
    let table = check(tmp.path(), &[]);
    assert_eq!(table.status.code(), Some(1));
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("STATUS CHECK"), "{text}");
    let line = text.lines().find(|l| l.contains("cgroup.driver")).unwrap();
    assert!(
        line.starts_with("FAIL") && line.contains("systemd"),
        "{line}"
    );
    assert!(text.contains("fix: cgroupDriver: cgroupfs"), "{text}");
    let summary = doc["summary"].clone();
    assert!(
        text.trim_end().ends_with(&format!(
            "{} ok, {} info, {} warn, {} fail",
            summary["ok"], summary["info"], summary["warn"], summary["fail"]
        )),
        "{text}"
    );
}

#[test]
fn broken_inputs_are_named() {
    let tmp = node("hardened");
    std::fs::write(
        tmp.path().join("etc/containerd/conf.d/broken.toml"),
        "version = [",
    )
    .unwrap();
    std::fs::write(tmp.path().join("etc/stockade/strict.toml"), "name = 1\n").unwrap();
    let doc = json(&check(tmp.path(), &["--json"]));
    let text = doc["findings"].to_string();
    assert!(
        text.contains("/etc/containerd/conf.d/broken.toml"),
        "{text}"
    );
    let all = statuses(&doc);
    assert_eq!(
        status_of(&all, "profile./etc/stockade/strict.toml"),
        ["fail"]
    );

    // An empty root: nothing to read is a finding, not a crash.
    let empty = tempfile::tempdir().unwrap();
    let out = check(empty.path(), &["--json"]);
    assert_eq!(out.status.code(), Some(1));
    let all = statuses(&json(&out));
    assert_eq!(status_of(&all, "containerd.config"), ["fail"]);
    assert_eq!(status_of(&all, "cgroup.version"), ["fail"]);
}

#[test]
fn this_machine_is_checked_with_probes() {
    // The real node: whatever it finds, every finding has a status and the probes ran.
    let out = Command::new(env!("CARGO_BIN_EXE_stockade"))
        .args(["node", "check", "--json"])
        .output()
        .unwrap();
    assert!(matches!(out.status.code(), Some(0 | 1)), "{out:?}");
    let doc = json(&out);
    let idmap = doc["facts"]["idmap"].as_array().unwrap();
    assert_eq!(idmap.len(), 3);
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(doc["facts"]["kernel"]["release"], release.trim());
    if nix_is_root() {
        // Root can make the probe's user namespace: each filesystem got an answer.
        for fact in idmap {
            assert!(fact["probed"]["Ok"].is_boolean(), "{fact}");
        }
    }
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
}
