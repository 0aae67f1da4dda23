//! hostPaths (rule `host-path`) through `ctr --mount` and CRI mounts (strict: none), a volume on a
//! filesystem that cannot be idmapped, and secrets in the environment (rule
//! `secret-in-env`), each against runc in the same run where runc applies.

mod common;

use k8s_cri::v1::{KeyValue, Mount};
use std::path::{Path, PathBuf};
use stockade_integration::containerd::{HANDLER_STOCKADE, STOCKADE_RUNTIME};
use stockade_integration::paths;
use stockade_integration::runtimes::TestRuntime;
use stockade_integration::Containerd;

fn stockade() -> TestRuntime {
    TestRuntime::stockade().expect("profiles/default.toml")
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_nothing_left(c: &Containerd) {
    let left = c.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// A host directory outside the test profiles' allowlist, with a root-owned 0600 file.
fn host_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret"), "host-only\n").unwrap();
    std::fs::set_permissions(
        dir.path().join("secret"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    dir
}

fn bind(src: &Path, dst: &str, mode: &str) -> String {
    format!(
        "type=bind,src={},dst={dst},options=rbind:{mode}",
        src.display()
    )
}

#[test]
fn ctr_host_paths_follow_the_profile() {
    let c = common::start();
    let dir = host_dir();
    let script = ["sh", "-c", "cat /h/secret && touch /h/new"];
    let rw = bind(dir.path(), "/h", "rw");
    let out = common::ctr_run(
        &c,
        &TestRuntime::runc(),
        &["--rm", "--mount", &rw],
        "hp-runc",
        &script,
    );
    assert!(out.status.success(), "runc: {}", text(&out));
    std::fs::remove_file(dir.path().join("new")).unwrap();

    // Writable and not listed: refused by name, nothing created.
    let out = common::ctr_run(&c, &stockade(), &["--rm", "--mount", &rw], "hp-rw", &script);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("`host-path`")
            && t.contains(&dir.path().display().to_string())
            && t.contains(" /h"),
        "{t}"
    );
    assert!(!dir.path().join("new").exists());
    assert_nothing_left(&c);

    // Read-only: allowed, and through the idmapped mount container root reads the host
    // root's 0600 file, as under runc.
    let ro = bind(dir.path(), "/h", "ro");
    let out = common::ctr_run(
        &c,
        &stockade(),
        &["--rm", "--mount", &ro],
        "hp-ro",
        &["cat", "/h/secret"],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "host-only\n");
    assert_nothing_left(&c);
}

#[test]
fn cri_writable_host_path_is_refused_and_read_only_runs() {
    let c = common::start();
    let cri = c.cri().unwrap();
    let dir = host_dir();
    let pod_cfg = cri.pod_config("hostpath");
    let pod = cri.run_pod_sandbox(&pod_cfg, HANDLER_STOCKADE).unwrap();
    let with_mount = |readonly: bool| {
        let mut cfg = cri.container_config(if readonly { "ro" } else { "rw" }, &["sleep", "600"]);
        cfg.mounts = vec![Mount {
            container_path: "/h".into(),
            host_path: dir.path().display().to_string(),
            readonly,
            ..Default::default()
        }];
        cfg
    };
    let refused = cri
        .create_container(&pod, &with_mount(false), &pod_cfg)
        .and_then(|id| cri.start_container(&id));
    let e = format!("{:#}", refused.unwrap_err());
    assert!(
        e.contains("`host-path`") && e.contains("writable at /h"),
        "{e}"
    );
    let id = cri
        .run_container(&pod, &with_mount(true), &pod_cfg)
        .unwrap();
    let out = cri
        .exec_sync(&id, &["cat", "/h/secret"])
        .unwrap()
        .ok()
        .unwrap();
    assert_eq!(out, "host-only\n");
    cri.stop_pod_sandbox(&pod).unwrap();
    cri.remove_pod_sandbox(&pod).unwrap();

    // strict: no hostPath at all, not even read-only (as an application user, which
    // strict's run-as-root asks for).
    let strict = TestRuntime::stockade_strict().unwrap();
    let pod_cfg = cri.pod_config("hostpath-strict");
    let pod = cri.run_pod_sandbox(&pod_cfg, strict.cri_handler).unwrap();
    let mut cfg = with_mount(true);
    if let Some(sc) = cfg.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.run_as_user = Some(k8s_cri::v1::Int64Value { value: 1000 });
    }
    let refused = cri
        .create_container(&pod, &cfg, &pod_cfg)
        .and_then(|id| cri.start_container(&id));
    let e = format!("{:#}", refused.unwrap_err());
    assert!(
        e.contains("`host-path`") && e.contains("allows only the host paths listed"),
        "{e}"
    );
    cri.stop_pod_sandbox(&pod).unwrap();
    cri.remove_pod_sandbox(&pod).unwrap();
    assert_nothing_left(&c);
}

/// The test default profile with `from` replaced by `to`, written to `dir`.
fn profile_variant(dir: &Path, from: &str, to: &str) -> PathBuf {
    let text = std::fs::read_to_string(paths::profile("default.toml").unwrap()).unwrap();
    assert!(text.contains(from), "{from}");
    let file = dir.join("variant.toml");
    std::fs::write(&file, text.replace(from, to)).unwrap();
    file
}

#[test]
fn a_volume_that_cannot_be_idmapped_is_named_or_mounted_unmapped_loudly() {
    let c = common::start();
    // procfs has no idmapped mounts (tmpfs before Linux 6.3 is the everyday case).
    let mount = "type=bind,src=/proc/version,dst=/version,options=bind:ro";
    let cmd = ["cat", "/version"];
    let version = std::fs::read_to_string("/proc/version").unwrap();
    let out = common::ctr_run(
        &c,
        &TestRuntime::runc(),
        &["--rm", "--mount", mount],
        "u-runc",
        &cmd,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        version,
        "runc: {}",
        text(&out)
    );

    let out = common::ctr_run(
        &c,
        &stockade(),
        &["--rm", "--mount", mount],
        "u-refuse",
        &cmd,
    );
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    for needle in [
        "volume at /version",
        "/proc/version",
        "proc filesystem",
        "volumes.unidmappable",
    ] {
        assert!(t.contains(needle), "{t} lacks {needle}");
    }
    assert_nothing_left(&c);

    let dir = tempfile::tempdir().unwrap();
    let rt = TestRuntime {
        label: "stockade-unmapped",
        ctr_runtime: STOCKADE_RUNTIME,
        cri_handler: HANDLER_STOCKADE,
        profile: Some(profile_variant(
            dir.path(),
            "unidmappable = \"refuse\"",
            "unidmappable = \"unmapped\"",
        )),
    };
    let out = common::ctr_run(&c, &rt, &["--rm", "--mount", mount], "u-unmapped", &cmd);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        version,
        "{}",
        text(&out)
    );
    let log = std::fs::read_to_string(&c.log_path).unwrap();
    assert!(
        log.contains("volume mounted WITHOUT idmapping") && log.contains("/proc/version"),
        "no warning in the containerd log"
    );
    assert_nothing_left(&c);
}

#[test]
fn secrets_in_the_environment_are_audited_by_name_and_refused_in_strict() {
    let c = common::start();
    let cri = c.cri().unwrap();
    let value = format!("hunter2-{}", std::process::id());
    let key = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIG9k\n-----END EC PRIVATE KEY-----";
    let env = |cfg: &mut k8s_cri::v1::ContainerConfig| {
        cfg.envs = [
            ("DB_PASSWORD", value.as_str()),
            ("TLS", key),
            ("LOG_LEVEL", "debug"),
        ]
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.to_string(),
            value: v.to_string(),
        })
        .collect();
    };
    let pod_cfg = cri.pod_config("envsecret");
    let pod = cri.run_pod_sandbox(&pod_cfg, HANDLER_STOCKADE).unwrap();
    let mut cfg = cri.container_config("app", &["sleep", "600"]);
    env(&mut cfg);
    // An application user: strict refuses root (rule run-as-root) before looking further.
    if let Some(sc) = cfg.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.run_as_user = Some(k8s_cri::v1::Int64Value { value: 1000 });
    }
    let id = cri.run_container(&pod, &cfg, &pod_cfg).unwrap();
    let audit = std::fs::read_to_string(paths::test_audit_log()).unwrap();
    let line: serde_json::Value = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["container_id"] == id.as_str() && v["event"] == "hardened")
        .expect("the container's audit line");
    let findings: Vec<(&str, &str)> = line["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["rule"].as_str().unwrap(), f["reason"].as_str().unwrap()))
        .filter(|(rule, _)| *rule == "secret-in-env")
        .collect();
    assert_eq!(findings.len(), 1, "{line}");
    let reason = findings[0].1;
    assert!(
        reason.contains("DB_PASSWORD (its name)")
            && reason.contains("TLS (a PEM private key)")
            && !reason.contains("LOG_LEVEL"),
        "{reason}"
    );
    assert!(
        !audit.contains(&value) && !audit.contains("MHcCAQEEIG9k"),
        "a value reached the audit log"
    );
    cri.stop_pod_sandbox(&pod).unwrap();
    cri.remove_pod_sandbox(&pod).unwrap();

    let strict = TestRuntime::stockade_strict().unwrap();
    let pod_cfg = cri.pod_config("envsecret-strict");
    let pod = cri.run_pod_sandbox(&pod_cfg, strict.cri_handler).unwrap();
    let result = cri
        .create_container(&pod, &cfg, &pod_cfg)
        .and_then(|id| cri.start_container(&id));
    let e = format!("{:#}", result.unwrap_err());
    assert!(
        e.contains("`secret-in-env`") && e.contains("DB_PASSWORD") && !e.contains(&value),
        "{e}"
    );
    cri.stop_pod_sandbox(&pod).unwrap();
    cri.remove_pod_sandbox(&pod).unwrap();
    assert_nothing_left(&c);
}
