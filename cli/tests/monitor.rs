//! `stockade monitor` as an operator runs it: the binary on an ephemeral port, scraped over
//! HTTP, its output checked by promtool; bad options refused with a message.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use stockade_runtime::audit::{AuditEvent, AuditLog};
use stockade_runtime::hardener::{Refusal, Rule};
use stockade_monitor::http;
use stockade_runtime::pod::PodIdentity;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The exporter process; killed (by its pid, via the handle) and reaped on drop.
struct Exporter {
    child: Child,
    addr: SocketAddr,
}

impl Exporter {
    fn start(args: &[&str]) -> Exporter {
        let mut child = Command::new(env!("CARGO_BIN_EXE_stockade"))
            .arg("monitor")
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .and_then(|a| a.parse().ok());
        let Some(addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("no address in the exporter's first line: {line:?}");
        };
        Exporter { child, addr }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn serves_metrics_that_promtool_accepts_and_counts_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let trail = tmp.path().join("audit.jsonl");
    // The shipped default profile, with its audit log in our temp dir: the exporter must
    // follow the log the profile names.
    let shipped = std::fs::read_to_string(root().join("profiles/default.toml")).unwrap();
    let seccomp = root().join("profiles/seccomp/default.json");
    let text = shipped
        .replace(
            "profile = \"seccomp/default.json\"",
            &format!("profile = {:?}", seccomp.display().to_string()),
        )
        .replace(
            "log = \"/var/log/stockade/audit.jsonl\"",
            &format!("log = {:?}", trail.display().to_string()),
        );
    assert_ne!(text, shipped, "profiles/default.toml changed shape");
    let profile = tmp.path().join("default.toml");
    std::fs::write(&profile, text).unwrap();
    let exporter = Exporter::start(&[
        "--no-seccomp",
        "--profile",
        profile.to_str().unwrap(),
        "--state-dir",
        tmp.path().to_str().unwrap(),
    ]);
    assert_eq!(
        http::get(exporter.addr, "/healthz").unwrap(),
        (200, "ok\n".to_string())
    );
    assert_eq!(http::get(exporter.addr, "/nope").unwrap().0, 404);

    let series = "stockade_policy_refusals_total{rule=\"host-network\"}";
    let (status, before) = http::get(exporter.addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert_eq!(value(&before, series), Some(0.0));
    assert_eq!(
        value(&before, "stockade_containers_running{profile=\"default\"}"),
        Some(0.0)
    );
    // The default profile's pool: 67108864 IDs / 65536 per pod.
    assert_eq!(value(&before, "stockade_id_ranges_free"), Some(1024.0));

    let pod = PodIdentity {
        sandbox_id: "sb".into(),
        is_sandbox: true,
        namespace: Some("default".into()),
        pod_name: Some("hostnet".into()),
        container_name: None,
    };
    let refusal = Refusal {
        rule: Rule::HostNetwork,
        reason: "host network".into(),
    };
    AuditLog::open(&trail)
        .unwrap()
        .record(&AuditEvent::refused("sb", &pod, "default", &refusal))
        .unwrap();
    let (_, after) = http::get(exporter.addr, "/metrics").unwrap();
    assert_eq!(value(&after, series), Some(1.0), "{after}");

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus) must be installed");
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(after.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn bad_options_are_refused_with_a_message() {
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_stockade"))
            .arg("monitor")
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&[
        "--listen",
        "127.0.0.1:0",
        "--audit-log",
        "/nonexistent/audit.log",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/audit.log"), "{err}");

    let out = run(&["--kmsg", "--no-seccomp"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be used with"));

    let out = run(&["--listen", "not-an-address"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not-an-address"));
}

#[test]
fn prometheus_deploy_files_are_valid() {
    let dir = root().join("deploy/prometheus");
    for args in [
        ["check", "config", "scrape.yml"],
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts_test.yml"],
    ] {
        let out = Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .expect("promtool (Debian package prometheus) must be installed");
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
