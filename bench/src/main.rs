//! stockade-bench: what Stockade costs compared with runc on this node, measured in one
//! run against a private containerd with both runtimes registered, interleaved A/B/A/B.
//! Writes results.json (every sample), report.md and SVG figures to a results directory.

mod config;
mod ctr_run;
mod flame;
mod floor;
mod goals;
mod growth;
mod idalloc;
mod images;
mod lifecycle;
mod machine;
mod memory;
mod model;
mod phases;
mod record;
mod report;
mod rootfs;
mod runtimes;
mod scale;
mod seccomp;
mod stats;
mod svg;
mod util;
mod workload;

use anyhow::{bail, Context, Result};
use clap::Parser;
use config::{Args, Settings};
use model::{Results, RuntimeStatus, Section};
use runtimes::Rt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stockade_integration::containerd::CRI_NAMESPACE;
use stockade_integration::paths::{self, SHIM_BINARY};
use stockade_integration::{Containerd, Cri};

/// A measurement helper's main (`--internal-NAME <profile.toml> <samples>`).
fn helper_main(name: &str, v: &[String], f: fn(&Path, usize) -> Result<()>) -> ExitCode {
    let r = v
        .get(1)
        .and_then(|n| n.parse::<usize>().ok())
        .with_context(|| format!("--internal-{name} <profile.toml> <samples>"))
        .and_then(|n| f(Path::new(&v[0]), n));
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("stockade-bench {name} helper: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(v) = &args.internal_seccomp {
        return helper_main("seccomp", v, seccomp::child_main);
    }
    if let Some(v) = &args.internal_record {
        return helper_main("record", v, record::child_main);
    }
    if let Some(dir) = &args.render {
        let r = std::fs::read(dir.join("results.json"))
            .with_context(|| format!("reading {}", dir.join("results.json").display()))
            .and_then(|b| serde_json::from_slice::<Results>(&b).context("parsing results.json"))
            .and_then(|results| write_results(dir, &results));
        return match r {
            Ok(()) => {
                eprintln!("report: {}", dir.join("report.md").display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("stockade-bench: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&args) {
        Ok(dir) => {
            eprintln!("report: {}", dir.join("report.md").display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stockade-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sections that need the private containerd, in run order.
const CONTAINERD_SECTIONS: &[(&str, &str)] = &[
    ("lifecycle", "CRI lifecycle latency, serial"),
    ("parallel", "CRI lifecycle latency, parallel"),
    ("ctr", "`ctr run --rm`"),
    ("flame", "Flame graphs of a Create"),
    ("scale", "Start latency as the node fills up"),
    ("workload", "Workload overhead inside the container"),
    ("rootfs", "Rootfs setup against image size (through CRI)"),
];

/// Section ids in report order.
const SECTION_ORDER: &[&str] = &[
    "lifecycle_serial",
    "shim_phases",
    "lifecycle_parallel",
    "ctr_run",
    "flame",
    "scale",
    "memory",
    "shim_phases_scale",
    "idrange",
    "workload",
    "rootfs_library",
    "rootfs_cri",
    "seccomp",
    "record",
];

struct Run {
    sections: Vec<Section>,
    aborted: Option<String>,
}

impl Run {
    /// The scale section's notes on where each CRI call's growth goes, once the shim's
    /// spans at each level are in.
    fn note_scale_growth(&mut self) {
        let find = |id: &str| self.sections.iter().position(|s| s.id == id);
        let Some(scale) = find("scale") else { return };
        let phases = find("shim_phases_scale").map(|i| &self.sections[i]);
        let notes = growth::notes(&self.sections[scale], phases);
        self.sections[scale].notes.extend(notes);
    }

    /// Run one section; an error becomes a skipped section with the reason, never a crash.
    fn section(&mut self, id: &str, title: &str, f: impl FnOnce() -> Result<Section>) {
        let t = Instant::now();
        if util::interrupted() {
            let mut s = Section::new(id, title, "");
            s.skipped = Some("interrupted".into());
            self.sections.push(s);
            return;
        }
        eprintln!("== {title}");
        let mut s = match f() {
            Ok(s) => s,
            Err(e) => {
                let mut s = Section::new(id, title, "");
                s.skipped = Some(format!("{e:#}"));
                if util::interrupted() {
                    self.aborted = Some("interrupted by a signal".into());
                }
                s
            }
        };
        s.duration_s = t.elapsed().as_secs_f64();
        eprintln!("   {:.1} s", s.duration_s);
        self.sections.push(s);
    }

    fn skip(&mut self, id: &str, title: &str, why: &str) {
        let mut s = Section::new(id, title, "");
        s.skipped = Some(why.to_string());
        self.sections.push(s);
    }
}

/// A stand-in shim that fails with a clear message, so containerd starts and the runc
/// half of the bench runs when the Stockade shim is not built.
fn stub_shim(error: &str) -> Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("stockade-bench-stub-")
        .tempdir()?;
    let path = dir.path().join(SHIM_BINARY);
    let msg = error.replace('\'', "");
    std::fs::write(
        &path,
        format!("#!/bin/sh\necho '{SHIM_BINARY} is not built: {msg}' >&2\nexit 1\n"),
    )?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// One warm-up pod per runtime (not counted), bounded in time: a runtime that cannot run
/// a pod is marked failed and left out of every section, with the error.
fn probe(c: &Containerd, rts: &mut [Rt], timeout: Duration) {
    for rt in rts.iter_mut().filter(|r| r.failed.is_none()) {
        eprintln!("   probe: {}", rt.label);
        let (tx, rx) = std::sync::mpsc::channel();
        let socket = c.socket.clone();
        let logs = c.dir.join("pods");
        let cgroup_parent = c.cgroup_parent();
        let probe_rt = rt.clone();
        // Detached: a hung shim must not hang the bench; the call ends with containerd.
        std::thread::spawn(move || {
            let r = Cri::connect(
                &socket,
                logs,
                cgroup_parent,
                Arc::new(Mutex::new(Vec::new())),
            )
            .and_then(|cri| {
                lifecycle::pod_cycle(&cri, &probe_rt, &format!("bench-probe-{}", probe_rt.label))
            });
            let _ = tx.send(r);
        });
        match rx.recv_timeout(timeout) {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => rt.failed = Some(format!("{e:#}")),
            Err(_) => {
                rt.failed = Some(format!(
                    "a pod did not start and stop within {timeout:?} (hung shim?)"
                ))
            }
        }
        if let Some(e) = &rt.failed {
            eprintln!("   {}: failed: {e}", rt.label);
        }
    }
}

/// Import the bench images into the CRI namespace and wait until CRI sees them.
fn import_images(c: &Containerd, settings: &Settings) -> Result<()> {
    let archive = c.dir.join("bench-images.tar");
    let names = images::write_bench_images(&archive, settings.small_files, settings.big_files)?;
    let out = c.ctr_in(
        CRI_NAMESPACE,
        &["images", "import", &archive.display().to_string()],
    );
    if !out.status.success() {
        bail!(
            "importing the bench images: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let _ = std::fs::remove_file(&archive);
    let cri = c.cri()?;
    for name in names {
        stockade_integration::exec::wait_for(
            &format!("CRI to see {name}"),
            Duration::from_secs(60),
            || cri.image_present(&name).ok().filter(|p| *p),
        )?;
    }
    Ok(())
}

/// containerd's log so far, with the shims' lines it copied (the shim-phase sections).
fn containerd_log(c: &Containerd) -> Result<String> {
    std::fs::read_to_string(&c.log_path)
        .with_context(|| format!("reading {}", c.log_path.display()))
}

fn containerd_sections(run: &mut Run, c: &Containerd, rts: &[Rt], st: &Settings) {
    let needs_images = st.runs("workload") || st.runs("rootfs");
    let images = if needs_images {
        eprintln!(
            "   importing the bench images ({} files in the big one)",
            st.big_files
        );
        import_images(c, st).map_err(|e| format!("{e:#}"))
    } else {
        Ok(())
    };
    if st.runs("lifecycle") {
        let mut ran = Vec::new();
        run.section("lifecycle_serial", "CRI lifecycle latency, serial", || {
            lifecycle::serial(c, rts, st.serial, &mut ran)
        });
        run.section(
            "shim_phases",
            "Where Create and Start go inside the shim",
            || Ok(phases::section(&containerd_log(c)?, &ran)),
        );
    }
    if st.runs("parallel") {
        run.section(
            "lifecycle_parallel",
            "CRI lifecycle latency, parallel",
            || lifecycle::parallel(c, rts, st.parallel, st.batches),
        );
    }
    if st.runs("ctr") {
        run.section("ctr_run", "`ctr run --rm`", || {
            ctr_run::run(c, rts, st.ctr_runs)
        });
    }
    if st.runs("flame") {
        run.section("flame", "Flame graphs of a Create", || {
            let note = flame::probe().map_err(anyhow::Error::msg)?;
            flame::run(c, rts, st.flame_cycles, st.flame_pods, &note)
        });
    }
    if st.runs("scale") {
        let mut memory = None;
        let mut ran = Vec::new();
        run.section("scale", "Start latency as the node fills up", || {
            let (sec, mem) = scale::run(c, rts, &st.scale_levels, st.scale_samples, &mut ran)?;
            memory = Some(mem);
            Ok(sec)
        });
        match memory {
            Some(m) => run.sections.push(m),
            None => run.skip("memory", "Shim memory", "the scale section did not finish"),
        }
        run.section(
            "shim_phases_scale",
            "Where Create and Start go inside the shim as the node fills up",
            || Ok(phases::scale_section(&containerd_log(c)?, &ran)),
        );
        run.note_scale_growth();
    }
    if st.runs("workload") {
        run.section("workload", "Workload overhead inside the container", || {
            images.clone().map_err(anyhow::Error::msg)?;
            workload::run(c, rts, st.workload_reps, st.workload_scale, !st.quick)
        });
    }
    if st.runs("rootfs") {
        run.section(
            "rootfs_cri",
            "Rootfs setup against image size (through CRI)",
            || {
                images.clone().map_err(anyhow::Error::msg)?;
                rootfs::cri(c, rts, st.small_files, st.big_files, st.rootfs_cri_samples)
            },
        );
    }
}

fn run(args: &Args) -> Result<PathBuf> {
    if !nix::unistd::geteuid().is_root() {
        bail!("stockade-bench needs root (it starts containerd and mounts filesystems)");
    }
    util::install_signal_handlers()?;
    let settings = Settings::from_args(args);
    let (started_utc, stamp) = util::utc_now();
    let out_dir = match &args.out {
        Some(d) => d.clone(),
        None if settings.quick => args.results_root.join(format!("quick-{stamp}")),
        None => args.results_root.join(&stamp),
    };
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let mut rts = runtimes::parse(&args.runtimes)?;
    let shim = paths::shim_dir()
        .map(|d| d.join(SHIM_BINARY))
        .map_err(|e| format!("{e:#}"));
    let mut machine = machine::collect(&shim);
    // The floor's shim is built next to Stockade's (same cargo profile).
    let null_shim = paths::shim_dir()
        .map(|d| d.join(runtimes::NULL_SHIM_BINARY))
        .ok()
        .filter(|p| p.is_file());
    if null_shim.is_none() {
        for rt in rts.iter_mut().filter(|r| r.is_floor()) {
            rt.failed = Some(format!(
                "{} not built: cargo build -p stockade-bench-null-shim (make bench builds it)",
                runtimes::NULL_SHIM_BINARY
            ));
        }
    }
    let _stub = match &shim {
        Ok(_) => None,
        Err(e) => {
            for rt in rts.iter_mut().filter(|r| r.rt.hardened()) {
                rt.failed = Some(format!("shim binary not built: {e}"));
            }
            let stub = stub_shim(e)?;
            std::env::set_var("STOCKADE_SHIM_DIR", stub.path());
            Some(stub)
        }
    };
    eprintln!(
        "stockade-bench: {} run, results in {}",
        if settings.quick { "quick" } else { "full" },
        out_dir.display()
    );
    let t0 = Instant::now();
    let mut run = Run {
        sections: Vec::new(),
        aborted: None,
    };

    if settings.runs("seccomp") {
        run.section("seccomp", "Seccomp filter install time", || {
            seccomp::run(settings.seccomp_samples)
        });
    }
    if settings.runs("record") {
        run.section("record", "Record mode's cost to the workload", || {
            record::run(settings.record_samples)
        });
    }
    if settings.runs("idrange") {
        run.section("idrange", "ID-range allocation", || {
            idalloc::run(settings.id_ranges, settings.id_samples)
        });
    }
    if settings.runs("rootfs") {
        run.section(
            "rootfs_library",
            "Rootfs setup against image size (library)",
            || {
                rootfs::library(
                    settings.small_files,
                    settings.big_files,
                    settings.rootfs_lib_samples,
                )
            },
        );
    }
    let wanted: Vec<&(&str, &str)> = CONTAINERD_SECTIONS
        .iter()
        .filter(|(id, _)| settings.runs(id))
        .collect();
    if !wanted.is_empty() && !util::interrupted() {
        eprintln!("== starting a private containerd");
        let version = stockade_integration::binaries::Binaries::get()
            .map(|b| b.config_version())
            .unwrap_or(stockade_integration::binaries::ConfigVersion::V2);
        // The runtimes' state (containerd's bundles, runc's root, the Stockade shims' ID
        // ranges and records) on a tmpfs of the run's own, as /run is on a node: never
        // the node's /run/stockade, and not this VM's /run, which is on its disk.
        let options = stockade_integration::containerd::StartOptions {
            extra_config: runtimes::containerd_extra_config(version),
            run_on_tmpfs: !settings.state_on_disk,
            ..Default::default()
        };
        machine["runtime_state"] = serde_json::json!(if settings.state_on_disk {
            "this machine's disk, the instance's temp dir under /tmp (--state-on-disk)"
        } else {
            "tmpfs of the run's own (containerd's state and bundles, runc's root, the Stockade shims' state), as /run on a node"
        });
        match Containerd::start_with(options) {
            Ok(c) => {
                machine["containerd_instance"] = serde_json::json!(c.dir.display().to_string());
                probe(
                    &c,
                    &mut rts,
                    Duration::from_secs(if settings.quick { 60 } else { 120 }),
                );
                containerd_sections(&mut run, &c, &rts, &settings);
                if let Some(to) = &args.keep_containerd_log {
                    match std::fs::copy(&c.log_path, to) {
                        Ok(_) => eprintln!("   containerd's log kept in {}", to.display()),
                        Err(e) => eprintln!(
                            "   could not keep containerd's log in {}: {e}",
                            to.display()
                        ),
                    }
                }
                eprintln!("== stopping containerd and cleaning up");
                drop(c);
            }
            Err(e) => {
                let why = format!("the private containerd did not start: {e:#}");
                eprintln!("   {why}");
                for (id, title) in wanted {
                    run.skip(id, title, &why);
                }
            }
        }
    }
    if util::interrupted() && run.aborted.is_none() {
        run.aborted = Some("interrupted by a signal".into());
    }

    machine["loadavg_end"] = serde_json::json!(machine::loadavg());
    // Report order: the order, whatever order they ran in.
    run.sections.sort_by_key(|s| {
        SECTION_ORDER
            .iter()
            .position(|id| *id == s.id)
            .unwrap_or(usize::MAX)
    });
    let results = Results {
        tool: format!("stockade-bench {}", env!("CARGO_PKG_VERSION")),
        quick: settings.quick,
        started_utc,
        finished_utc: util::utc_now().0,
        duration_s: t0.elapsed().as_secs_f64(),
        machine,
        settings: serde_json::to_value(&settings)?,
        runtimes: rts
            .iter()
            .map(|r| RuntimeStatus {
                label: r.label.clone(),
                cri_handler: r.handler().to_string(),
                description: r.description(),
                ctr_args: r.ctr_args(),
                failed: r.failed.clone(),
            })
            .collect(),
        sections: run.sections,
        aborted: run.aborted,
    };
    write_results(&out_dir, &results)?;
    if args.out.is_none() && !settings.quick && results.aborted.is_none() {
        let latest = args.results_root.join("latest");
        copy_dir(&out_dir, &latest)?;
    }
    Ok(out_dir)
}

fn write_results(dir: &Path, results: &Results) -> Result<()> {
    let json = serde_json::to_string_pretty(results)?;
    std::fs::write(dir.join("results.json"), json)
        .with_context(|| format!("writing {}", dir.join("results.json").display()))?;
    let (md, figures) = report::render(results);
    for (name, svg) in figures {
        std::fs::write(dir.join(&name), svg).with_context(|| format!("writing {name}"))?;
    }
    std::fs::write(dir.join("report.md"), md).context("writing report.md")?;
    Ok(())
}

/// Replace `to` with a copy of the files of `from` (flat: the results dir has no subdirs).
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    if to.exists() {
        std::fs::remove_dir_all(to).with_context(|| format!("removing {}", to.display()))?;
    }
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), to.join(e.file_name()))
                .with_context(|| format!("copying {}", e.path().display()))?;
        }
    }
    Ok(())
}
