//! The audit trail under concurrency: threads and separate processes (as shims of
//! different pods are) append to one log; every line must stay whole and valid JSON.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use stockade_runtime::audit::{AuditEvent, AuditLog};
use stockade_runtime::hardener::{Change, Refusal, Report, Rule};
use stockade_runtime::pod::PodIdentity;

const LINES_PER_WRITER: usize = 200;
const WRITER_ENV: &str = "STOCKADE_AUDIT_WRITER";

fn write_lines(path: &Path, writer: &str) {
    let log = AuditLog::open(path).unwrap();
    let pod = PodIdentity {
        sandbox_id: format!("sb-{writer}"),
        is_sandbox: false,
        namespace: Some("ns".into()),
        pod_name: Some(format!("pod-{writer}")),
        container_name: Some("c".into()),
        image: None,
    };
    // Long lines (several KiB) make interleaving likely if writes were not atomic.
    let report = Report {
        changes: (0..40)
            .map(|i| Change {
                guard: "capabilities",
                what: format!("dropped capability number {i} from writer {writer}"),
            })
            .collect(),
        notes: vec!["x".repeat(2000)],
        findings: Vec::new(),
    };
    for i in 0..LINES_PER_WRITER {
        let event = if i % 3 == 0 {
            AuditEvent::refused(
                &format!("{writer}-{i}"),
                &pod,
                "default",
                &Refusal {
                    rule: Rule::Privileged,
                    reason: "privileged".into(),
                },
            )
        } else {
            AuditEvent::hardened(&format!("{writer}-{i}"), &pod, "default", &report)
        };
        log.record(&event).unwrap();
    }
}

/// Run by the child processes of `concurrent_appends_stay_whole`; a no-op otherwise.
#[test]
fn audit_writer_process() {
    if let Ok(spec) = std::env::var(WRITER_ENV) {
        let (path, writer) = spec.split_once('|').unwrap();
        write_lines(Path::new(path), writer);
    }
}

#[test]
fn concurrent_appends_stay_whole() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("new/dir");
    let path = log_dir.join("audit.jsonl");
    AuditLog::open(&path).unwrap();
    assert_eq!(
        std::fs::metadata(&log_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let exe = std::env::current_exe().unwrap();
    let processes: Vec<_> = (0..4)
        .map(|p| {
            std::process::Command::new(&exe)
                .args(["--exact", "audit_writer_process", "--test-threads=1"])
                .env(WRITER_ENV, format!("{}|proc{p}", path.display()))
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || write_lines(&path, &format!("thread{t}")))
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    for mut p in processes {
        assert!(p.wait().unwrap().success());
    }

    let text = std::fs::read_to_string(&path).unwrap();
    let mut per_writer: HashMap<String, usize> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("line {} is not valid JSON ({e}): {line:.200}", n + 1));
        let pod = v["pod"].as_str().unwrap().to_string();
        *per_writer.entry(pod).or_default() += 1;
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    assert_eq!(per_writer.len(), 8, "{per_writer:?}");
    assert!(
        per_writer.values().all(|n| *n == LINES_PER_WRITER),
        "{per_writer:?}"
    );
}
