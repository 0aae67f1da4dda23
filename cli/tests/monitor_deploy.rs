//! deploy/monitor, deploy/grafana and deploy/prometheus against the exporter itself: the
//! systemd unit and the DaemonSet start it with exactly their arguments, the dashboard's
//! queries and the alert rules are valid PromQL over metrics the exporter exports.

mod common;

use common::{assert_success, default_exporter, profile_copy, promtool, root, Exporter};
use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use stockade_monitor::http;

/// The node paths the deploy files name, and where the test puts them instead.
fn relocate(arg: &str, tmp: &Path) -> String {
    arg.replace("/etc/stockade/", &format!("{}/", tmp.display()))
        .replace("/run/stockade", &tmp.join("state").display().to_string())
}

/// Starts the exporter with a deploy file's arguments (listen address and node paths
/// relocated) and checks it serves.
fn serves_with(args: &[String]) {
    let tmp = tempfile::tempdir().unwrap();
    profile_copy(tmp.path(), "default.toml");
    profile_copy(tmp.path(), "strict.toml");
    let mut args: Vec<String> = args.iter().map(|a| relocate(a, tmp.path())).collect();
    let listen = args
        .iter()
        .position(|a| a == "--listen")
        .expect("the exporter is given --listen");
    args[listen + 1] = "127.0.0.1:0".into();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let exporter = Exporter::start_exact(&args);
    assert_eq!(
        http::get(exporter.addr, "/healthz").unwrap(),
        (200, "ok\n".into())
    );
    let (status, metrics) = http::get(exporter.addr, "/metrics").unwrap();
    assert_eq!(status, 200);
    // Both profiles of the deploy file are loaded.
    for profile in ["default", "strict"] {
        let series = format!("stockade_containers_running{{profile=\"{profile}\"}}");
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
}

#[test]
fn the_systemd_unit_is_valid_and_starts_the_exporter() {
    let unit =
        std::fs::read_to_string(root().join("deploy/monitor/stockade-monitor.service")).unwrap();
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    let mut words = exec.split_whitespace();
    assert_eq!(words.next(), Some("/usr/local/bin/stockade"), "{exec}");
    let args: Vec<String> = words.map(str::to_string).collect();

    // systemd's own check, with the binary where this build has it.
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("stockade-monitor.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/stockade", env!("CARGO_BIN_EXE_stockade")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&copy)
        .output()
        .expect("systemd-analyze (Debian package systemd; `make test` installs it)");
    assert_success("systemd-analyze verify", &out);
    assert!(
        out.stderr.is_empty(),
        "systemd-analyze warns: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serves_with(&args);
}

fn yaml(path: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(root().join(path)).unwrap();
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    serde_json::to_value(doc).unwrap()
}

fn strings(v: &serde_json::Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| Some(s.as_str()?.to_string()))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_daemonset_is_consistent_and_starts_the_exporter() {
    let ds = yaml("deploy/monitor/daemonset.yaml");
    assert_eq!(ds["kind"], "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    let selector = &ds["spec"]["selector"]["matchLabels"];
    for (k, v) in selector.as_object().unwrap() {
        assert_eq!(&ds["spec"]["template"]["metadata"]["labels"][k], v, "{k}");
    }
    // Audit records reach only the host's network namespace.
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(pod["hostPID"], true);
    let c = &pod["containers"][0];
    assert_eq!(strings(&c["command"]), ["/usr/local/bin/stockade"]);
    let caps = &c["securityContext"]["capabilities"];
    assert_eq!(strings(&caps["drop"]), ["ALL"]);
    assert_eq!(strings(&caps["add"]), ["AUDIT_READ"]);

    let args = strings(&c["args"]);
    let listen = &args[args.iter().position(|a| a == "--listen").unwrap() + 1];
    let port: u64 = listen.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(c["ports"][0]["containerPort"], port);
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], port);
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    // $(NODE_IP) is an env var of the container.
    let env: Vec<&str> = c["env"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    assert!(listen.starts_with("$(NODE_IP)") && env.contains(&"NODE_IP"));

    // Every mount has its volume, and every node path the exporter is given is mounted.
    let volumes: BTreeSet<&str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    let mounts: Vec<&str> = c["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            assert!(volumes.contains(m["name"].as_str().unwrap()), "{m}");
            m["mountPath"].as_str().unwrap()
        })
        .collect();
    for path in args.iter().filter(|a| a.starts_with('/')) {
        assert!(
            mounts.iter().any(|m| path.starts_with(m)),
            "{path} is not mounted"
        );
    }
    // The profiles' audit log is mounted too.
    assert!(mounts.contains(&"/var/log/stockade"));

    let mut full = vec!["stockade".to_string()];
    full.extend(args.iter().map(|a| a.replace("$(NODE_IP)", "127.0.0.1")));
    serves_with(&full[1..]);
}

/// Metric names a scrape of the exporter has (histograms by their series names).
fn exported_metrics() -> BTreeSet<String> {
    let tmp = tempfile::tempdir().unwrap();
    let exporter = default_exporter(tmp.path());
    let (_, text) = http::get(exporter.addr, "/metrics").unwrap();
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .flat_map(|l| {
            let mut words = l.split_whitespace();
            let name = words.next().unwrap_or_default().to_string();
            match words.next() {
                Some("histogram") => ["_bucket", "_sum", "_count"]
                    .iter()
                    .map(|s| format!("{name}{s}"))
                    .collect(),
                _ => vec![name],
            }
        })
        .collect()
}

/// The `stockade_*` names an expression uses.
fn stockade_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("stockade_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn dashboard_and_alert_queries_are_valid_over_exported_metrics() {
    let exported = exported_metrics();
    assert!(
        exported.contains("stockade_seccomp_denials_total"),
        "{exported:?}"
    );

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/stockade.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            // Grafana's variables, as Grafana fills them in.
            exprs.push(
                expr.replace("$__rate_interval", "5m")
                    .replace("$instance", ".*"),
            );
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    for expr in &exprs {
        for name in stockade_names(expr) {
            assert!(
                exported.contains(&name),
                "the dashboard's {name} is not exported"
            );
        }
    }
    // promtool parses PromQL in rule files: the dashboard's queries as recording rules.
    let tmp = tempfile::tempdir().unwrap();
    let rules: String = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| format!("      - record: dashboard:query{i}\n        expr: {e:?}\n"))
        .collect();
    std::fs::write(
        tmp.path().join("dashboard.yml"),
        format!("groups:\n  - name: dashboard\n    rules:\n{rules}"),
    )
    .unwrap();
    assert_success(
        "promtool check rules (the dashboard's queries)",
        &promtool(tmp.path(), &["check", "rules", "dashboard.yml"], None),
    );

    let alerts = yaml("deploy/prometheus/alerts.yml");
    let mut alert_names = 0;
    for rule in alerts["groups"][0]["rules"].as_array().unwrap() {
        alert_names += 1;
        for name in stockade_names(rule["expr"].as_str().unwrap()) {
            assert!(
                exported.contains(&name),
                "alert {}: {name} is not exported",
                rule["alert"]
            );
        }
    }
    assert!(alert_names >= 7);
}
