//! Escape probes, each run inside a default runc container and a Stockade container. The
//! runc run shows the probe really tests something; under Stockade every probe is stopped.
//! Writes the table to `target/security-report.md` (see `make security-report`).

mod common;

use stockade_integration::probes::{self, Outcome, ProbeLine, Row};
use stockade_integration::runtimes::TestRuntime;

/// What stops each syscall-level probe under Stockade.
fn guard(probe: &str) -> &'static str {
    match probe {
        "userns" | "mount-tmpfs" | "keyctl" | "bpf" | "perf_event_open" | "userfaultfd"
        | "io_uring_setup" | "af-vsock" | "af-alg" => "seccomp",
        "release-agent" => "seccomp (mount), read-only /sys",
        "af-packet" => "capabilities (no CAP_NET_RAW)",
        "sysrq-trigger" => "read-only path + user namespace",
        "kcore" => "masked path",
        _ => "?",
    }
}

fn run_all(c: &stockade_integration::Containerd, rt: &TestRuntime, id: &str) -> Vec<ProbeLine> {
    let out = probes::run_probe(c, rt, &[], id, &["/probe", "all"]);
    assert!(
        out.status.success(),
        "probe all ({}): {}",
        rt.label,
        probes::describe(&out)
    );
    let lines = probes::parse_probe_lines(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(
        lines.len(),
        13,
        "probe all ({}): {}",
        rt.label,
        probes::describe(&out)
    );
    lines
}

fn cell(l: &ProbeLine) -> String {
    format!("{} ({})", l.outcome.word(), l.detail)
}

#[test]
fn syscall_level_escape_probes() {
    let c = common::start();
    probes::install_probe_images(&c).expect("probe images");
    let runc = run_all(&c, &TestRuntime::runc(), "probe-runc");
    let stockade = run_all(
        &c,
        &TestRuntime::stockade().expect("profiles/default.toml"),
        "probe-stockade",
    );

    let mut rows = Vec::new();
    for (r, s) in runc.iter().zip(&stockade) {
        assert_eq!(r.name, s.name);
        let runc_allows = r.outcome == Outcome::Allowed;
        let stockade_stops = matches!(s.outcome, Outcome::Blocked | Outcome::Unsupported);
        rows.push(Row {
            probe: r.name.clone(),
            runc: cell(r),
            stockade: cell(s),
            guard: guard(&r.name).into(),
            runc_allows,
            stockade_stops,
            note: match r.outcome {
                Outcome::Allowed => String::new(),
                Outcome::Unsupported => "this kernel lacks it".into(),
                _ => "runc's default container blocks it too".into(),
            },
        });
    }
    let table = probes::markdown(&rows);
    let path = probes::report_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(&path, &table).unwrap();
    println!("{table}");

    for row in &rows {
        assert!(row.stockade_stops, "not stopped under Stockade: {row:?}");
    }
    // The probes are real: an unconfined runc container gets through these.
    for name in [
        "userns",
        "keyctl",
        "af-vsock",
        "af-packet",
        "userfaultfd",
        "io_uring_setup",
        "perf_event_open",
    ] {
        let row = rows.iter().find(|r| r.probe == name).unwrap();
        assert!(
            row.runc_allows,
            "runc baseline does not show {name}: {row:?}"
        );
    }
}
