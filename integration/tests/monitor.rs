//! `stockade monitor` watching real Stockade containers: a container's denied syscalls
//! and a refused container show up in the exporter's counters, and from there, through a
//! real Prometheus scraping it, in PromQL queries and the shipped alert rules.

mod common;

use std::time::Duration;
use stockade_integration::exporter::Exporter as Monitor;
use stockade_integration::prometheus::{self, Prometheus};
use stockade_integration::runtimes::TestRuntime;

#[test]
fn denied_syscalls_and_refusals_reach_the_exporter() {
    let c = common::start();
    let rt = TestRuntime::stockade().expect("profiles/default.toml");
    let monitor = Monitor::start(&c);
    let prom = Prometheus::start(&[monitor.addr], &[prometheus::alert_rules()])
        .expect("a private Prometheus (Debian package prometheus; `make test` installs it)");
    let id = format!("mon-{}", std::process::id());
    let privileged_before = monitor.sum("stockade_policy_refusals_total", &["rule=\"privileged\""]);
    // Prometheus has the counter before the refusal, so the alert sees it increase. `+ 1`:
    // a sum of no series is 0, so a counter still at 0 must be seen to exist.
    let refusals = "stockade_policy_refusals_total{job=\"stockade\",rule=\"privileged\"}";
    let scraped_before = prom
        .wait_for_sum(
            &format!("{refusals} + 1"),
            privileged_before + 1.0,
            PROMETHEUS_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}\n{}", prom.log()));
    assert_eq!(scraped_before, privileged_before + 1.0);

    let root_finding = ["rule=\"run-as-root\"", "profile=\"default\""];
    let findings_before = monitor.sum("stockade_policy_findings_total", &root_finding);

    // sethostname is denied (EPERM) by the default filter. `hostname` exits at once, so by
    // the time its record is read the pid is gone: the record's UID, from the pod's host
    // range, still names the pod (and, with one container, the container).
    let script = "hostname h; sleep 1; echo done";
    let out = common::ctr_run(&c, &rt, &["--rm"], &id, &["sh", "-c", script]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("done"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let denied = monitor.wait_for(
        "stockade_seccomp_denials_total",
        &[
            &format!("pod=\"{id}\""),
            &format!("container=\"{id}\""),
            "syscall=\"sethostname\"",
        ],
        1.0,
    );
    assert!(
        denied >= 1.0,
        "no sethostname denial counted for {id}:\n{}",
        monitor.diagnosis()
    );
    assert_eq!(
        monitor.sum("stockade_seccomp_denials_total", &["pod=\"unknown\""]),
        0.0,
        "{}",
        monitor.diagnosis()
    );

    // The default profile audits (does not refuse) a container running as root.
    let findings = monitor.wait_for(
        "stockade_policy_findings_total",
        &root_finding,
        findings_before + 1.0,
    );
    assert!(findings > findings_before, "{}", monitor.diagnosis());
    // The pod's range, released when `--rm` deleted it, waits in quarantine.
    let quarantined = monitor.wait_for("stockade_id_ranges_quarantined", &[], 1.0);
    assert!(quarantined >= 1.0, "{}", monitor.diagnosis());

    let refused = common::ctr_run(
        &c,
        &rt,
        &["--rm", "--privileged"],
        &format!("{id}-p"),
        &["true"],
    );
    assert!(!refused.status.success());
    let privileged = monitor.wait_for(
        "stockade_policy_refusals_total",
        &["rule=\"privileged\""],
        privileged_before + 1.0,
    );
    assert!(privileged > privileged_before, "{}", monitor.diagnosis());
    println!("{}", monitor.scrape());

    // The same two facts back through Prometheus' HTTP API.
    let denials = format!(
        "stockade_seccomp_denials_total{{job=\"stockade\",pod=\"{id}\",container=\"{id}\",syscall=\"sethostname\",action=\"errno\"}}"
    );
    let queried = prom
        .wait_for_sum(&denials, 1.0, PROMETHEUS_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", prom.log()));
    assert!(
        queried <= denied,
        "Prometheus has {queried}, the exporter {denied}"
    );
    prom.wait_for_sum(refusals, privileged, PROMETHEUS_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", prom.log()));
    // Every shipped rule loaded and evaluates; the refusal fires StockadePolicyRefusals.
    let groups = prom.api("rules", &[]).unwrap();
    let rules: Vec<&serde_json::Value> = groups["groups"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|g| g["rules"].as_array().into_iter().flatten())
        .collect();
    assert!(rules.len() >= 7, "{groups}");
    for rule in &rules {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    let firing = prom
        .wait_for_sum(
            "ALERTS{alertname=\"StockadePolicyRefusals\",alertstate=\"firing\",rule=\"privileged\"}",
            1.0,
            PROMETHEUS_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("{e}\n{}\n{}", alert_diagnosis(&prom), prom.log()));
    assert_eq!(firing, 1.0);
}

/// What Prometheus makes of the refusal alert: its input, its rule state, its alerts.
fn alert_diagnosis(prom: &Prometheus) -> String {
    let increase = prom.query(
        "sum by (instance, rule) (increase(stockade_policy_refusals_total{rule=\"privileged\"}[15m]))",
    );
    let raw = prom.query("stockade_policy_refusals_total{rule=\"privileged\"}[30s]");
    let rule = prom.api("rules", &[]).map(|groups| {
        groups["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .find(|r| r["name"] == "StockadePolicyRefusals")
            .cloned()
    });
    let alerts = prom.api("alerts", &[]);
    format!("increase: {increase:?}\nsamples: {raw:?}\nrule: {rule:?}\nalerts: {alerts:?}")
}

/// Prometheus scrapes and evaluates every second; this only guards against hanging.
const PROMETHEUS_TIMEOUT: Duration = Duration::from_secs(60);
