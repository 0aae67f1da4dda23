//! The operator CLI as an operator runs it.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn stockade(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stockade"))
        .args(args)
        .current_dir(root())
        .output()
        .unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn shipped_profiles_check() {
    for p in ["profiles/default.toml", "profiles/strict.toml"] {
        let out = stockade(&["profile", "check", p]);
        assert!(out.status.success(), "{p}: {}", stderr(&out));
        assert!(String::from_utf8_lossy(&out.stdout).contains("is valid"));
    }
}

#[test]
fn broken_profile_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = std::fs::read_to_string(root().join("profiles/default.toml")).unwrap();
    // Keep the seccomp file reachable from the copy.
    let text = text.replace(
        "profile = \"seccomp/default.json\"",
        &format!(
            "profile = {:?}",
            root().join("profiles/seccomp/default.json")
        ),
    );
    for (from, to, key) in [
        ("pids = 8192", "pids = -5", "cgroups.ceilings.pids"),
        (
            "no_new_privs = true",
            "no_new_privs = false",
            "capabilities.no_new_privs",
        ),
        (
            "host_ipc = \"deny\"",
            "host_ipc = \"maybe\"",
            "policy.host_ipc",
        ),
        ("first_id = 1073741824", "first_id = 0", "userns.first_id"),
        (
            "log_denials = true",
            "log_denials = true\nverbose = 1",
            "seccomp.verbose",
        ),
    ] {
        assert!(text.contains(from), "{from}");
        let file = dir.path().join("broken.toml");
        std::fs::write(&file, text.replacen(from, to, 1)).unwrap();
        let out = stockade(&["profile", "check", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{key}");
        let err = stderr(&out);
        assert!(err.contains(&format!("key `{key}`")), "{key}: {err}");
        assert!(err.contains("broken.toml"), "{err}");
    }
    // A seccomp file with an unknown syscall is refused, naming the file.
    let seccomp = dir.path().join("bad-seccomp.json");
    std::fs::write(
        &seccomp,
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","no_such_call"],"action":"SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap();
    let file = dir.path().join("broken.toml");
    let with_bad_seccomp = text.replace(
        &format!(
            "profile = {:?}",
            root().join("profiles/seccomp/default.json")
        ),
        &format!("profile = {seccomp:?}"),
    );
    std::fs::write(&file, with_bad_seccomp).unwrap();
    let out = stockade(&["profile", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("seccomp.profile") && err.contains("no_such_call"),
        "{err}"
    );
}

#[test]
fn privileged_config_is_refused_with_the_rule() {
    let out = stockade(&[
        "harden",
        "--profile",
        "profiles/default.toml",
        "runtime/tests/fixtures/cri-privileged.json",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(out.stdout.is_empty());
    assert!(
        stderr(&out).contains("rule `privileged`"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn ordinary_config_is_hardened() {
    let out = stockade(&[
        "harden",
        "--profile",
        "profiles/default.toml",
        "--json",
        "runtime/tests/fixtures/ctr-default.json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let spec = &doc["spec"];
    assert_eq!(spec["process"]["noNewPrivileges"], true);
    assert!(spec["linux"]["seccomp"].is_null());
    assert_eq!(spec["linux"]["uidMappings"][0]["hostID"], 1_073_741_824u64);
    assert_eq!(doc["seccomp"]["default"]["defaultAction"], "SCMP_ACT_ERRNO");
    let changes = doc["report"]["changes"].as_array().unwrap();
    assert!(changes.iter().any(|c| c["guard"] == "capabilities"));
}

#[test]
fn malformed_config_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.json");
    std::fs::write(&file, "{\"process\": 42}").unwrap();
    let out = stockade(&[
        "harden",
        "--profile",
        "profiles/default.toml",
        file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("config.json is not a valid OCI config"));
}
