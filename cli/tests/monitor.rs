//! `stockade monitor` as an operator runs it: the binary on an ephemeral port, scraped over
//! HTTP, its output checked by promtool; bad options refused with a message.

mod common;

use common::{assert_success, default_exporter, promtool, root, value};
use std::process::Command;
use stockade_monitor::http;
use stockade_runtime::audit::{AuditEvent, AuditLog};
use stockade_runtime::hardener::{Refusal, Rule};
use stockade_runtime::pod::PodIdentity;

#[test]
fn serves_metrics_that_promtool_accepts_and_counts_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let trail = tmp.path().join("audit.jsonl");
    // The shipped default profile, with its audit log in our temp dir: the exporter must
    // follow the log the profile names.
    let exporter = default_exporter(tmp.path());
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
        image: None,
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

    let out = promtool(tmp.path(), &["check", "metrics"], Some(&after));
    assert_success("promtool check metrics", &out);
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
        assert_success(
            &format!("promtool {}", args.join(" ")),
            &promtool(&dir, &args, None),
        );
    }
}
