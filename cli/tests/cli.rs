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

/// A shipped profile with its seccomp paths absolute and `kubelet.userns_ids` = `ids`.
fn shipped_with_kubelet_ids(dir: &Path, name: &str, ids: &str) -> PathBuf {
    let text = std::fs::read_to_string(root().join("profiles").join(name)).unwrap();
    let seccomp = format!("\"{}/", root().join("profiles/seccomp").display());
    let text = text
        .replace("\"seccomp/", &seccomp)
        .replace("userns_ids = \"subuid\"", &format!("userns_ids = {ids:?}"));
    let file = dir.join(name);
    std::fs::write(&file, text).unwrap();
    file
}

#[test]
fn shipped_profiles_check() {
    let dir = tempfile::tempdir().unwrap();
    for (p, root_verdict, narrowed) in [
        ("default.toml", "Audit", false),
        ("strict.toml", "Deny", true),
    ] {
        // With kubelet's range stated beside Stockade's pool.
        let file = shipped_with_kubelet_ids(dir.path(), p, "65536:7208960");
        let out = stockade(&["profile", "check", file.to_str().unwrap()]);
        assert!(out.status.success(), "{p}: {}", stderr(&out));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            stdout.contains("is valid") && stdout.contains("65536..7274496"),
            "{stdout}"
        );
        // The ID reuse policy and the new rules are visible to the operator.
        assert!(
            stdout.contains("reuse: rotation with quarantine"),
            "{stdout}"
        );
        assert!(
            stdout.contains("a released range is reused last"),
            "{stdout}"
        );
        assert!(
            stdout.contains("host-devices: none beyond the OCI defaults"),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("run-as-root: {root_verdict}")),
            "{stdout}"
        );
        assert_eq!(
            stdout.contains("narrowed by") && stdout.contains("seccomp/strict.json"),
            narrowed,
            "{stdout}"
        );
        // As shipped, on a node without a user `kubelet`: kubelet's default range (every ID
        // from 65536) overlaps the pool, and the check says so.
        if nix::unistd::User::from_name("kubelet").unwrap().is_none() {
            let out = stockade(&["profile", "check", &format!("profiles/{p}")]);
            assert_eq!(out.status.code(), Some(2), "{p}");
            let err = stderr(&out);
            assert!(
                err.contains("key `userns`")
                    && err.contains("overlaps kubelet's user-namespace range 65536..4294967296")
                    && err.contains("kubelet:65536:7208960"),
                "{err}"
            );
        }
        // Overlapping by statement, or "none".
        let file = shipped_with_kubelet_ids(dir.path(), p, "1073741824:65536");
        let out = stockade(&["profile", "check", file.to_str().unwrap()]);
        assert!(
            stderr(&out).contains("(kubelet.userns_ids)"),
            "{}",
            stderr(&out)
        );
        let file = shipped_with_kubelet_ids(dir.path(), p, "none");
        assert!(stockade(&["profile", "check", file.to_str().unwrap()])
            .status
            .success());
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
    // Absurd values, a syntax error (one line), an unknown capability.
    for (from, to, key) in [
        ("memory = \"8Gi\"", "memory = -1", "cgroups.ceilings.memory"),
        ("pids = 1024", "pids = 0", "cgroups.defaults.pids"),
        (
            "ids_per_pod = 65536",
            "ids_per_pod = 0",
            "userns.ids_per_pod",
        ),
        (
            "ids_per_pod = 65536",
            "ids_per_pod = 134217728",
            "userns.ids_per_pod",
        ),
        (
            "\"CHOWN\",",
            "\"CHOWN\", \"CAP_FLY\",",
            "capabilities.allow[1]",
        ),
        ("pids = 1024", "pids = \"lots\"", "cgroups.defaults.pids"),
    ] {
        assert!(text.contains(from), "{from}");
        let file = dir.path().join("absurd.toml");
        std::fs::write(&file, text.replacen(from, to, 1)).unwrap();
        let out = stockade(&["profile", "check", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{key}");
        let err = stderr(&out);
        assert!(
            err.contains("absurd.toml") && err.contains(&format!("key `{key}`")),
            "{key}: {err}"
        );
    }
    let file = dir.path().join("syntax.toml");
    std::fs::write(&file, text.replacen("pids = 1024", "pids = = 1024", 1)).unwrap();
    let out = stockade(&["profile", "check", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("syntax.toml")
            && err.contains("(line ")
            && err.trim_end().lines().count() == 1,
        "{err:?}"
    );
    let out = stockade(&["profile", "check", "/nonexistent/profile.toml"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("/nonexistent/profile.toml: cannot read"));

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
    // Malformed JSON, an unknown action, conflicting and duplicate rules.
    for (json, needle) in [
        (r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":["#, "EOF while parsing"),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_EXPLODE"}]}"#,
            "key `syscalls[0].action`: unknown variant `SCMP_ACT_EXPLODE`",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["getcwd"],"action":"SCMP_ACT_ALLOW"},{"names":["getcwd"],"action":"SCMP_ACT_KILL"}]}"#,
            "`getcwd` has unconditional rules in syscalls[0] (SCMP_ACT_ALLOW) and syscalls[1] (SCMP_ACT_KILL)",
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","read"],"action":"SCMP_ACT_ALLOW"}]}"#,
            "syscalls[0] names `read` twice",
        ),
    ] {
        std::fs::write(&seccomp, json).unwrap();
        let out = stockade(&["profile", "check", file.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{json}");
        let err = stderr(&out);
        assert!(
            err.contains("key `seccomp.profile`")
                && err.contains("bad-seccomp.json")
                && err.contains(needle),
            "{err:?} lacks {needle:?}"
        );
    }
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
    let err = stderr(&out);
    assert!(
        err.contains("config.json") && err.contains("key `process`: invalid type"),
        "{err}"
    );
}

/// The ctr fixture with `edit` applied to its JSON.
fn config_with(edit: impl FnOnce(&mut serde_json::Value)) -> serde_json::Value {
    let text =
        std::fs::read_to_string(root().join("runtime/tests/fixtures/ctr-default.json")).unwrap();
    let mut spec: serde_json::Value = serde_json::from_str(&text).unwrap();
    edit(&mut spec);
    spec
}

/// Every malformed or absurd config.json: exit 2, the file and the problem on stderr,
/// nothing on stdout.
#[test]
fn bad_configs_exit_2_naming_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let seccomp = |rules: serde_json::Value| {
        config_with(|s| {
            s["linux"]["seccomp"] =
                serde_json::json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules})
        })
        .to_string()
    };
    let cases: Vec<(&str, String, &[&str])> = vec![
        (
            "not-json",
            "{\"ociVersion\": ".into(),
            &["EOF while parsing"],
        ),
        ("array", "[]".into(), &["not a JSON object"]),
        (
            "uid-string",
            config_with(|s| s["process"]["user"]["uid"] = "root".into()).to_string(),
            &["key `process.user.uid`", "invalid type"],
        ),
        (
            "period-negative",
            config_with(|s| {
                s["linux"]["resources"]["cpu"] = serde_json::json!({"period": -1, "quota": 5})
            })
            .to_string(),
            &["key `linux.resources.cpu.period`", "-1"],
        ),
        (
            "unknown-action",
            seccomp(serde_json::json!([{"names": ["getpid"], "action": "SCMP_ACT_EXPLODE"}])),
            &["key `linux.seccomp.syscalls[0].action`", "SCMP_ACT_EXPLODE"],
        ),
        (
            "unknown-syscall",
            seccomp(serde_json::json!([{"names": ["frobnicate"], "action": "SCMP_ACT_ERRNO"}])),
            &["linux.seccomp: syscalls[0]", "`frobnicate` is unknown"],
        ),
        (
            "empty-root",
            config_with(|s| s["root"]["path"] = "".into()).to_string(),
            &["root.path is empty"],
        ),
        (
            "escaping-root",
            config_with(|s| s["root"]["path"] = "../../etc".into()).to_string(),
            &["root.path \"../../etc\"", "`..`"],
        ),
        (
            "no-process",
            config_with(|s| {
                s.as_object_mut().unwrap().remove("process");
            })
            .to_string(),
            &["has no `process`"],
        ),
    ];
    for (name, text, needles) in cases {
        let file = dir.path().join(format!("{name}.json"));
        std::fs::write(&file, text).unwrap();
        let out = stockade(&[
            "harden",
            "--profile",
            "profiles/default.toml",
            file.to_str().unwrap(),
        ]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert!(out.stdout.is_empty(), "{name}");
        assert!(err.contains(&format!("{name}.json")), "{name}: {err}");
        for needle in needles {
            assert!(err.contains(needle), "{name}: {err:?} lacks {needle:?}");
        }
    }
    // Missing files: the config, the profile.
    let out = stockade(&[
        "harden",
        "--profile",
        "profiles/default.toml",
        "/nonexistent/config.json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read spec /nonexistent/config.json"),
        "{}",
        stderr(&out)
    );
    let out = stockade(&[
        "harden",
        "--profile",
        "/nonexistent/profile.toml",
        "runtime/tests/fixtures/ctr-default.json",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("profile /nonexistent/profile.toml: cannot read"),
        "{}",
        stderr(&out)
    );
}

/// Absurd values the hardener replaces rather than refuses: shown in the report.
#[test]
fn absurd_limits_and_foreign_id_mappings_are_replaced_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("absurd.json");
    let spec = config_with(|s| {
        s["linux"]["resources"]["memory"] = serde_json::json!({"limit": -5});
        s["linux"]["resources"]["cpu"] = serde_json::json!({"quota": 0, "period": 0});
        s["linux"]["resources"]["pids"] = serde_json::json!({"limit": -3});
        s["linux"]["uidMappings"] =
            serde_json::json!([{"containerID": 0, "hostID": 0, "size": 4294967295u32}]);
        s["linux"]["gidMappings"] = s["linux"]["uidMappings"].clone();
    });
    std::fs::write(&file, spec.to_string()).unwrap();
    let out = stockade(&[
        "harden",
        "--profile",
        "profiles/default.toml",
        "--json",
        file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let r = &doc["spec"]["linux"]["resources"];
    assert_eq!(r["memory"]["limit"], 1u64 << 30);
    assert_eq!(r["cpu"]["period"], 100_000);
    assert_eq!(r["cpu"]["quota"], 100_000);
    assert_eq!(r["pids"]["limit"], 1024);
    assert_eq!(
        doc["spec"]["linux"]["uidMappings"][0]["hostID"],
        1_073_741_824u64
    );
    assert_eq!(
        doc["spec"]["linux"]["gidMappings"][0]["hostID"],
        1_073_741_824u64
    );
    let changes = doc["report"]["changes"].to_string();
    for needle in [
        "-5 asked",
        "CPU period 0us",
        "-3 asked",
        "mappings replaced",
    ] {
        assert!(changes.contains(needle), "{needle}: {changes}");
    }
}
