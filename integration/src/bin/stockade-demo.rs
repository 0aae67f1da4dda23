//! stockade-demo: start a private containerd, run the same pod under runc and under
//! Stockade (CRI runtime handlers `runc` and `stockade`), and print side by side what
//! each container really got. Everything it starts is stopped when it ends.
//!
//! Run as root: `make demo` (installs packages, builds, runs this), or
//! `cargo build -p containerd-shim-stockade-v1 && cargo run -p stockade-integration --bin stockade-demo`.

use anyhow::{bail, Context, Result};
use std::sync::atomic::{AtomicBool, Ordering};
use stockade_integration::cgroups::{process_cgroups, CgroupLimits};
use stockade_integration::hardening::{cap_names, parse_id_map, parse_status};
use stockade_integration::runtimes::TestRuntime;
use stockade_integration::{Containerd, Cri};

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Ctrl-C or SIGTERM: finish the current step, then clean up and exit.
fn install_signal_handlers() -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::empty(),
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe { sigaction(sig, &action) }
            .with_context(|| format!("installing a {sig} handler"))?;
    }
    Ok(())
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

fn step(msg: &str) {
    eprintln!("==> {msg}");
}

/// One column of the table: what a container got, or why it could not run.
struct Column {
    label: String,
    rows: Vec<String>,
}

const ROWS: [&str; 8] = [
    "uid_map (container root ->)",
    "CapEff",
    "NoNewPrivs",
    "Seccomp",
    "memory limit",
    "CPU limit",
    "pids limit",
    "hostPID pod",
];

fn human_bytes(b: u64) -> String {
    const GI: u64 = 1 << 30;
    const MI: u64 = 1 << 20;
    if b >= GI {
        format!("{:.2} GiB", b as f64 / GI as f64)
    } else {
        format!("{:.0} MiB", b as f64 / MI as f64)
    }
}

fn limits_rows(l: &CgroupLimits) -> [String; 3] {
    let memory = l.memory.map(human_bytes).unwrap_or_else(|| "none".into());
    let cpu = match (l.cpu_quota, l.cpu_period) {
        (Some(q), Some(p)) if p > 0 => format!("{:.2} CPU ({q}/{p} us)", q as f64 / p as f64),
        _ => "none".into(),
    };
    let pids = l
        .pids
        .map(|p| p.to_string())
        .unwrap_or_else(|| "none".into());
    [memory, cpu, pids]
}

/// Run a pod with one `sleep` container under `rt` and read what it got.
fn inspect(cri: &Cri, rt: &TestRuntime) -> Result<Vec<String>> {
    let pod_cfg = cri.pod_config(&format!("demo-{}", rt.label));
    let pod = cri.run_pod_sandbox(&pod_cfg, rt.cri_handler)?;
    let result = (|| -> Result<Vec<String>> {
        check_interrupted()?;
        let cfg = cri.container_config("app", &["sleep", "3600"]);
        let id = cri.run_container(&pod, &cfg, &pod_cfg)?;
        let status = cri.exec_sync(&id, &["cat", "/proc/self/status"])?.ok()?;
        let uid_map = cri.exec_sync(&id, &["cat", "/proc/self/uid_map"])?.ok()?;
        let s = parse_status(&status)?;
        let map = parse_id_map(&uid_map)?;
        let uid = match map.as_slice() {
            [e] if e.inside == 0 && e.outside == 0 && e.count == 4_294_967_295 => {
                "0 0 4294967295 (host root)".to_string()
            }
            [e, ..] => format!(
                "{} {} {} (host uid {})",
                e.inside, e.outside, e.count, e.outside
            ),
            [] => "(empty)".to_string(),
        };
        let pid = cri.container_pid(&id)?;
        let limits = process_cgroups(pid)?.limits()?;
        let seccomp = match s.seccomp {
            0 => "0 (disabled)".to_string(),
            1 => "1 (strict)".to_string(),
            2 => "2 (filter)".to_string(),
            n => n.to_string(),
        };
        let [memory, cpu, pids] = limits_rows(&limits);
        Ok(vec![
            uid,
            format!("{:016x} ({} caps)", s.cap_eff, cap_names(s.cap_eff).len()),
            s.no_new_privs.to_string(),
            seccomp,
            memory,
            cpu,
            pids,
        ])
    })();
    let _ = cri.stop_pod_sandbox(&pod);
    let _ = cri.remove_pod_sandbox(&pod);
    result
}

/// Try a pod in the host's PID namespace: started, or refused with the reason.
fn host_pid_pod(cri: &Cri, rt: &TestRuntime) -> String {
    let mut cfg = cri.pod_config(&format!("demo-hostpid-{}", rt.label));
    if let Some(ns) = cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
    {
        ns.pid = k8s_cri::v1::NamespaceMode::Node as i32;
    }
    match cri.run_pod_sandbox(&cfg, rt.cri_handler) {
        Ok(pod) => {
            let _ = cri.stop_pod_sandbox(&pod);
            let _ = cri.remove_pod_sandbox(&pod);
            "started".into()
        }
        Err(e) => {
            let msg = format!("{e:#}");
            match msg
                .split("policy rule `")
                .nth(1)
                .and_then(|r| r.split('`').next())
            {
                Some(rule) => format!("refused: {rule}"),
                None => {
                    eprintln!("    hostPID pod with {} failed: {msg}", rt.label);
                    "failed (see above)".into()
                }
            }
        }
    }
}

fn print_table(columns: &[Column]) {
    let label_w = ROWS.iter().map(|r| r.len()).max().unwrap_or(0) + 2;
    let col_w: Vec<usize> = columns
        .iter()
        .map(|c| {
            c.rows
                .iter()
                .map(String::len)
                .chain([c.label.len()])
                .max()
                .unwrap_or(0)
                + 3
        })
        .collect();
    let mut header = format!("{:label_w$}", "");
    for (c, w) in columns.iter().zip(&col_w) {
        header.push_str(&format!("{:w$}", c.label, w = *w));
    }
    println!("\n{}", header.trim_end());
    println!("{}", "-".repeat(label_w + col_w.iter().sum::<usize>()));
    for (i, row) in ROWS.iter().enumerate() {
        let mut line = format!("{row:label_w$}");
        for (c, w) in columns.iter().zip(&col_w) {
            let cell = c.rows.get(i).map(String::as_str).unwrap_or("-");
            line.push_str(&format!("{cell:w$}", w = *w));
        }
        println!("{}", line.trim_end());
    }
    println!();
}

fn run() -> Result<bool> {
    install_signal_handlers()?;
    step("starting a private containerd (runc and Stockade registered) and importing busybox");
    let c = Containerd::start()?;
    eprintln!(
        "    containerd pid {}, state in {}",
        c.pid().unwrap_or(0),
        c.dir.display()
    );
    let cri = c.cri()?;
    let mut columns = Vec::new();
    let mut stockade_ok = true;
    for rt in [TestRuntime::runc(), TestRuntime::stockade()?] {
        check_interrupted()?;
        step(&format!(
            "running `sleep 3600` in a pod with runtime handler `{}`",
            rt.cri_handler
        ));
        let mut rows = match inspect(&cri, &rt) {
            Ok(rows) => rows,
            Err(e) => {
                eprintln!("    {} failed: {e:#}", rt.label);
                if rt.hardened() {
                    stockade_ok = false;
                }
                vec!["(failed, see above)".to_string(); ROWS.len() - 1]
            }
        };
        check_interrupted()?;
        step(&format!(
            "asking for a hostPID pod with `{}`",
            rt.cri_handler
        ));
        rows.push(host_pid_pod(&cri, &rt));
        columns.push(Column {
            label: rt.label.to_string(),
            rows,
        });
    }
    print_table(&columns);
    step("stopping containerd and removing everything it created");
    drop(cri);
    drop(c);
    Ok(stockade_ok)
}

fn main() {
    match run() {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("stockade-demo: {e:#}");
            std::process::exit(1);
        }
    }
}
