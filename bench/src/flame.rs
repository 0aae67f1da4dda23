//! Flame graphs of a Create (and of the pod sandbox's start) per runtime: `perf record`
//! system-wide (software cpu-clock, DWARF call graphs) during N CRI cycles, the samples
//! that fall inside the timed CRI calls and belong to our containerd's process tree
//! (containerd, its shims and what they run) or to the bench's CRI client, folded per
//! process and rendered with inferno.

use crate::lifecycle::{discard_pod, wait_state, SLEEP_CMD};
use crate::model::Section;
use crate::report::Figure;
use crate::runtimes::{active_runtimes, Rt};
use crate::util::{bar, check_stop};
use anyhow::{bail, Context, Result};
use k8s_cri::v1::ContainerState;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use stockade_integration::{Containerd, Cri};

/// Sampling frequency (Hz) of the cpu-clock event.
const HZ: u32 = 997;
/// CRI calls a flame graph is drawn for: containerd 1.6 creates and starts the app
/// container's task (the shim's Create and Start) inside StartContainer; RunPodSandbox
/// does the same for the pod's sandbox. (CreateContainer is containerd's alone.)
const PHASES: &[&str] = &["start_container", "run_pod_sandbox"];

/// CLOCK_MONOTONIC in seconds (perf record -k CLOCK_MONOTONIC stamps samples with it).
fn monotonic() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Whether perf works here, and what it can sample. Err: why the section cannot run.
pub fn probe() -> std::result::Result<String, String> {
    let out = Command::new("perf")
        .args(["stat", "-e", "instructions", "true"])
        .output()
        .map_err(|e| format!("perf is not installed ({e}): bench/setup.sh installs linux-perf"))?;
    let text = String::from_utf8_lossy(&out.stderr);
    let hw = if text.contains("<not supported>") || !out.status.success() {
        "`perf stat -e instructions true`: hardware counters not supported on this VM, so the \
         samples come from the software cpu-clock event (on-CPU time only; time spent \
         waiting is not in the graphs)"
    } else {
        "hardware counters available; sampling the software cpu-clock event anyway (the \
         same on every machine)"
    };
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let data = dir.path().join("probe.data");
    let rec = Command::new("perf")
        .args(["record", "-q", "-a", "-e", "cpu-clock", "-o"])
        .arg(&data)
        .args(["--", "true"])
        .output()
        .map_err(|e| e.to_string())?;
    if !rec.status.success() {
        return Err(format!(
            "perf record does not work here: {}",
            String::from_utf8_lossy(&rec.stderr).trim()
        ));
    }
    Ok(hw.to_string())
}

/// A running `perf record`, stopped by its PID.
struct Recorder {
    child: Option<Child>,
}

impl Recorder {
    fn start(data: &Path) -> Result<Recorder> {
        use std::os::unix::process::CommandExt;
        let child = Command::new("perf")
            .args(["record", "-q", "-a", "-e", "cpu-clock", "-F"])
            .arg(HZ.to_string())
            .args(["--call-graph", "dwarf,8192", "-k", "CLOCK_MONOTONIC", "-o"])
            .arg(data)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting perf record")?;
        let mut r = Recorder { child: Some(child) };
        // perf writes its header once the events are open.
        let started = stockade_integration::exec::wait_for(
            "perf record to start",
            Duration::from_secs(10),
            || std::fs::metadata(data).ok().filter(|m| m.len() > 0),
        );
        if let Err(e) = started {
            r.stop();
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(200));
        Ok(r)
    }

    fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        for _ in 0..300 {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Timed CRI calls: phase -> [start, end] in CLOCK_MONOTONIC seconds.
type Windows = BTreeMap<&'static str, Vec<(f64, f64)>>;

fn cycle(cri: &Cri, rt: &Rt, name: &str, w: &mut Windows) -> Result<()> {
    let pod_cfg = cri.pod_config(name);
    let t = monotonic();
    let pod = cri.run_pod_sandbox(&pod_cfg, rt.handler())?;
    w.entry("run_pod_sandbox")
        .or_default()
        .push((t, monotonic()));
    let r = (|| -> Result<()> {
        let ctr = rt.container_config(cri, "app", SLEEP_CMD);
        let id = cri.create_container(&pod, &ctr, &pod_cfg)?;
        let t = monotonic();
        cri.start_container(&id)?;
        w.entry("start_container")
            .or_default()
            .push((t, monotonic()));
        wait_state(
            cri,
            &id,
            ContainerState::ContainerRunning,
            Duration::from_secs(60),
        )
    })();
    discard_pod(cri, &pod);
    r
}

/// Folds perf script output into stacks per phase, keeping samples inside a window
/// whose process descends from one of `roots` (pids).
pub struct Folder<'a> {
    windows: &'a Windows,
    /// tid -> thread name (task events and samples keep it current).
    comm: HashMap<i32, String>,
    /// Processes of our tree.
    ours: HashSet<i32>,
    pub stacks: BTreeMap<&'static str, BTreeMap<String, u64>>,
    current: Option<(&'static str, String, Vec<String>)>,
}

/// "comm  pid/tid  time: rest" -> (comm, pid, tid, time, rest).
fn header(line: &str) -> Option<(&str, i32, i32, f64, &str)> {
    let (before, after) = match line.split_once(": ") {
        Some(parts) => parts,
        None => (line.trim_end().strip_suffix(':')?, ""),
    };
    let mut parts: Vec<&str> = before.split_whitespace().collect();
    let time: f64 = parts.pop()?.parse().ok()?;
    let (pid, tid) = parts.pop()?.split_once('/')?;
    let (pid, tid) = (pid.parse().ok()?, tid.parse().ok()?);
    let comm_end = before.find(&format!(" {pid}/{tid}"))?;
    Some((before[..comm_end].trim(), pid, tid, time, after))
}

/// A frame line "\t  addr symbol+0x1f (dso)" -> "symbol" (Rust hashes dropped).
fn frame(line: &str) -> String {
    let t = line.trim();
    let rest = t.split_once(' ').map(|(_, r)| r).unwrap_or(t);
    let sym = match rest.rfind(" (") {
        Some(i) => &rest[..i],
        None => rest,
    };
    let sym = match sym.rfind("+0x") {
        Some(i) => &sym[..i],
        None => sym,
    };
    let sym = match sym.rfind("::h") {
        Some(i) if sym[i + 3..].chars().all(|c| c.is_ascii_hexdigit()) && sym.len() - i == 19 => {
            &sym[..i]
        }
        _ => sym,
    };
    sym.replace(';', ":")
}

impl<'a> Folder<'a> {
    pub fn new(windows: &'a Windows, roots: &[i32]) -> Folder<'a> {
        Folder {
            windows,
            comm: HashMap::new(),
            ours: roots.iter().copied().collect(),
            stacks: BTreeMap::new(),
            current: None,
        }
    }

    fn phase_at(&self, t: f64) -> Option<&'static str> {
        self.windows
            .iter()
            .find(|(_, ws)| ws.iter().any(|(a, b)| *a <= t && t <= *b))
            .map(|(p, _)| *p)
    }

    fn finish(&mut self) {
        if let Some((phase, label, frames)) = self.current.take() {
            let mut key = label;
            let mut last = String::new();
            for f in frames.iter().rev() {
                if *f == last && f == "[unknown]" {
                    continue;
                }
                key.push(';');
                key.push_str(f);
                last = f.clone();
            }
            *self
                .stacks
                .entry(phase)
                .or_default()
                .entry(key)
                .or_default() += 1;
        }
    }

    pub fn line(&mut self, line: &str) {
        if line.starts_with(|c: char| c.is_whitespace()) && !line.trim().is_empty() {
            if let Some((_, _, frames)) = self.current.as_mut() {
                frames.push(frame(line));
            }
            return;
        }
        self.finish();
        let Some((comm, pid, tid, time, rest)) = header(line) else {
            return;
        };
        if let Some(ev) = rest.strip_prefix("PERF_RECORD_FORK(") {
            // PERF_RECORD_FORK(cpid:ctid):(ppid:ptid)
            let nums: Vec<i32> = ev
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse().ok())
                .collect();
            if let [cpid, ctid, ppid, ptid] = nums[..] {
                if let Some(name) = self.comm.get(&ptid).cloned() {
                    self.comm.insert(ctid, name);
                }
                if self.ours.contains(&ppid) {
                    self.ours.insert(cpid);
                }
            }
            return;
        }
        if rest.starts_with("PERF_RECORD_COMM") {
            // "PERF_RECORD_COMM[ exec]: name:pid/tid"
            if let Some((name, _)) = rest.split_once(": ").and_then(|(_, r)| r.rsplit_once(':')) {
                self.comm.insert(tid, name.to_string());
            }
            return;
        }
        if rest.starts_with("PERF_RECORD_") {
            return;
        }
        self.comm.entry(tid).or_insert_with(|| comm.to_string());
        if pid == 0 || !self.ours.contains(&pid) {
            return;
        }
        let Some(phase) = self.phase_at(time) else {
            return;
        };
        // The process's name is its main thread's (tokio workers have their own names).
        let label = self
            .comm
            .get(&pid)
            .cloned()
            .unwrap_or_else(|| comm.to_string());
        if label == "perf" {
            return;
        }
        self.current = Some((phase, label, Vec::new()));
    }

    pub fn end(&mut self) {
        self.finish();
    }
}

/// Frames on nearly every stack (system-call entry, goroutine and thread starts): they
/// say nothing about where the time goes, so the notes leave them out.
fn generic(frame: &str) -> bool {
    const GENERIC: &[&str] = &[
        "[unknown]",
        "do_syscall_64",
        "entry_SYSCALL_64_after_hwframe",
        "x64_sys_call",
        "runtime.goexit.abi0",
        "_start",
        "__libc_start_main",
        "__libc_start_call_main",
        "main",
        "start_thread",
        "clone3",
        "ret_from_fork",
        "ret_from_fork_asm",
    ];
    GENERIC.contains(&frame) || frame.starts_with("syscall.") || frame.contains("internal/syscall.")
}

/// Samples per process (the graphs' first level) and per frame (inclusive, each frame
/// counted once per stack; generic frames left out), largest first.
type Counts = Vec<(String, u64)>;

fn shares(stacks: &BTreeMap<String, u64>) -> (Counts, Counts) {
    let mut procs: BTreeMap<String, u64> = BTreeMap::new();
    let mut frames: BTreeMap<String, u64> = BTreeMap::new();
    for (stack, n) in stacks {
        let mut parts = stack.split(';');
        let p = parts.next().unwrap_or("");
        *procs.entry(p.to_string()).or_default() += n;
        let seen: HashSet<&str> = parts.filter(|f| !generic(f)).collect();
        for f in seen {
            *frames.entry(format!("{p}: {f}")).or_default() += n;
        }
    }
    let sorted = |m: BTreeMap<String, u64>| {
        let mut v: Vec<(String, u64)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        v
    };
    (sorted(procs), sorted(frames))
}

pub fn run(
    c: &Containerd,
    rts: &[Rt],
    cycles: usize,
    pods: usize,
    perf_note: &str,
) -> Result<Section> {
    let running = if pods == 0 {
        String::new()
    } else {
        format!(
            " With {pods} pods of the runtime running (busybox `{}`), started before the \
             recording and removed after it.",
            SLEEP_CMD.join(" ")
        )
    };
    let mut sec = Section::new(
        "flame",
        "Flame graphs of a Create (and Start)",
        &format!(
            "`perf record -a -e cpu-clock -F {HZ} --call-graph dwarf,8192 -k CLOCK_MONOTONIC` \
             while {cycles} CRI cycles of one runtime run (runtimes one after the other). Kept: \
             samples inside a timed StartContainer (`start_container`: containerd 1.6 runs \
             the shim's Create and Start of the app container here) or RunPodSandbox \
             (`run_pod_sandbox`: the sandbox's Create and Start) call, of processes forked \
             from our containerd or the bench (containerd, the shims and whatever they run; \
             the bench's CRI client; not other users of the machine, not kernel threads). \
             Folded per process (first level: the process's main-thread name) and drawn with \
             inferno. `<phase> cpu_ms` = on-CPU milliseconds per call, summed over those \
             processes.{running} {perf_note}."
        ),
    );
    sec.baseline = String::new();
    let rts: Vec<Rt> = active_runtimes(rts, &mut sec)
        .into_iter()
        .filter(|r| !r.runc_seccomp)
        .collect();
    let cri = c.cri()?;
    let roots: Vec<i32> = c
        .pid()
        .map(|p| p as i32)
        .into_iter()
        .chain(std::iter::once(std::process::id() as i32))
        .collect();
    let pb = bar(rts.len() * cycles, "flame graphs");
    for rt in &rts {
        check_stop()?;
        pb.set_message(rt.label.clone());
        let mut background = Vec::new();
        let recorded = (0..pods)
            .try_for_each(|i| crate::scale::background_pod(&cri, rt, i, &mut background))
            .context("starting the background pods")
            .and_then(|()| record_runtime(&cri, rt, cycles, &roots, &pb));
        for pod in &background {
            discard_pod(&cri, pod);
        }
        match recorded {
            Ok(stacks) => {
                for (phase, st) in stacks {
                    let total: u64 = st.values().sum();
                    let ms = total as f64 * 1e3 / f64::from(HZ) / cycles.max(1) as f64;
                    sec.push(&rt.label, &format!("{phase} cpu_ms"), "ms", ms);
                    sec.stacks.insert(
                        format!("{}/{phase}", rt.label),
                        st.into_iter().map(|(k, n)| format!("{k} {n}")).collect(),
                    );
                }
            }
            Err(e) => sec.fail(&rt.label, &e),
        }
    }
    pb.finish_and_clear();
    Ok(sec)
}

fn record_runtime(
    cri: &Cri,
    rt: &Rt,
    cycles: usize,
    roots: &[i32],
    pb: &indicatif::ProgressBar,
) -> Result<BTreeMap<&'static str, BTreeMap<String, u64>>> {
    let dir = tempfile::Builder::new()
        .prefix("stockade-bench-perf-")
        .tempdir()?;
    let data = dir.path().join("perf.data");
    let mut windows = Windows::new();
    {
        let mut rec = Recorder::start(&data)?;
        for i in 0..cycles {
            check_stop()?;
            cycle(
                cri,
                rt,
                &format!("bench-flame-{}-{i}", rt.label),
                &mut windows,
            )?;
            pb.inc(1);
        }
        rec.stop();
    }
    let mut child = Command::new("perf")
        .args(["script", "--no-inline", "--show-task-events", "-F"])
        .arg("comm,pid,tid,time,ip,sym,dso")
        .arg("-i")
        .arg(&data)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf script")?;
    let mut folder = Folder::new(&windows, roots);
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines() {
            folder.line(&line.context("reading perf script output")?);
        }
    }
    folder.end();
    let status = child.wait()?;
    if !status.success() {
        bail!("perf script failed ({status})");
    }
    if folder.stacks.is_empty() {
        bail!("no samples of our processes inside the timed calls");
    }
    Ok(std::mem::take(&mut folder.stacks))
}

/// Per recorded (runtime, phase): samples, shares by process, largest frames.
pub fn notes(sec: &Section) -> Vec<String> {
    let mut out = Vec::new();
    for (key, lines) in &sec.stacks {
        let st: BTreeMap<String, u64> = lines
            .iter()
            .filter_map(|l| {
                let (k, n) = l.rsplit_once(' ')?;
                Some((k.to_string(), n.parse().ok()?))
            })
            .collect();
        let total: u64 = st.values().sum();
        let (procs, frames) = shares(&st);
        let pct = |n: u64| 100.0 * n as f64 / total.max(1) as f64;
        // The section's `<phase> cpu_ms` is the whole per call: a process's share of the
        // samples is its share of that (which processes libcontainer's time is spent in).
        let per_call = key.split_once('/').and_then(|(rt, phase)| {
            let series = sec.samples(rt, &format!("{phase} cpu_ms"))?;
            series.samples.first().copied()
        });
        let list = |v: &[(String, u64)], n: usize, quote: bool| {
            v.iter()
                .take(n)
                .map(|(f, c)| {
                    if quote {
                        format!("`{f}` {:.0}%", pct(*c))
                    } else {
                        format!("{f} {:.0}%", pct(*c))
                    }
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        let by_process = match per_call {
            Some(ms) => procs
                .iter()
                .take(6)
                .map(|(p, c)| {
                    format!(
                        "{p} {:.0}% ({:.1} ms per call)",
                        pct(*c),
                        ms * *c as f64 / total.max(1) as f64
                    )
                })
                .collect::<Vec<_>>()
                .join(", "),
            None => list(&procs, 6, false),
        };
        out.push(format!(
            "{key}: {total} samples; by process: {by_process}. Largest frames (inclusive, \
             without system-call entry and thread starts): {}.",
            list(&frames, 12, true)
        ));
    }
    out
}

/// One flame graph per recorded (runtime, phase).
pub fn figures(sec: &Section) -> Vec<Figure> {
    let mut out = Vec::new();
    for phase in PHASES {
        for (key, lines) in &sec.stacks {
            let Some(rt) = key.strip_suffix(&format!("/{phase}")) else {
                continue;
            };
            let mut opts = inferno::flamegraph::Options::default();
            opts.title = format!("{rt}: {phase} (on-CPU, {HZ} Hz)");
            opts.count_name = "samples".into();
            opts.hash = true;
            opts.deterministic = true;
            let mut svg = Vec::new();
            let rendered = inferno::flamegraph::from_lines(
                &mut opts,
                lines.iter().map(String::as_str),
                &mut svg,
            );
            if rendered.is_ok() {
                out.push((
                    format!("flame_{rt}_{phase}.svg"),
                    String::from_utf8_lossy(&svg).into_owned(),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRIPT: &str = "\
containerd  100/100   10.000000: PERF_RECORD_COMM: containerd:100/100
containerd  100/101   10.100000: PERF_RECORD_FORK(200:200):(100:101)
containerd-shim  200/200   10.110000: PERF_RECORD_COMM exec: containerd-shim:200/200
containerd-shim  200/200   10.120000: PERF_RECORD_FORK(200:201):(200:200)
tokio-runtime-w  200/201   10.200000: PERF_RECORD_COMM: tokio-runtime-w:200/201
tokio-runtime-w  200/201   10.500000: 
\t    55d5c7e06ad0 stockade::create::h0123456789abcdef (/bin/shim)
\t    55d5c7e06a98 tokio::run+0x1f (/bin/shim)
\t    55d5c7e06a99 [unknown] ([unknown])
\t    55d5c7e06a9a [unknown] ([unknown])

opt cgu.10  300/301   10.500000: 
\t    1 rustc_work (/bin/rustc)

containerd-shim  200/200   12.000000: 
\t    1 outside_window (/bin/shim)

swapper     0/0      10.5: 
\tffffffff821f4dab pv_native_safe_halt ([kernel.kallsyms])
";

    #[test]
    fn folds_our_samples_inside_windows_under_the_process_name() {
        let mut w = Windows::new();
        w.insert("start_container", vec![(10.4, 10.6)]);
        let mut f = Folder::new(&w, &[100]);
        for l in SCRIPT.lines() {
            f.line(l);
        }
        f.end();
        let st = &f.stacks["start_container"];
        assert_eq!(
            st.iter().collect::<Vec<_>>(),
            vec![(
                &"containerd-shim;[unknown];tokio::run;stockade::create".to_string(),
                &1
            )],
            "{st:?}"
        );
        let (procs, frames) = shares(st);
        assert_eq!(procs, vec![("containerd-shim".into(), 1)]);
        assert!(frames
            .iter()
            .any(|(f, _)| f == "containerd-shim: stockade::create"));
        assert_eq!(f.stacks.len(), 1);
    }

    #[test]
    fn headers_with_spaces_in_the_name_parse() {
        let (comm, pid, tid, t, rest) = header("opt cgu.10  3853/4249   3773.209118: x").unwrap();
        assert_eq!((comm, pid, tid, rest), ("opt cgu.10", 3853, 4249, "x"));
        assert!((t - 3773.209118).abs() < 1e-9);
    }

    #[test]
    fn notes_split_a_calls_cpu_time_by_process() {
        let mut sec = Section::new("flame", "F", "");
        sec.push("stockade", "start_container cpu_ms", "ms", 20.0);
        sec.stacks.insert(
            "stockade/start_container".into(),
            vec![
                "youki:[2:INIT];init 3".into(),
                "stockade-zygote;create 1".into(),
            ],
        );
        sec.stacks
            .insert("runc/start_container".into(), vec!["runc;run 2".into()]);
        let notes = notes(&sec);
        let stockade = notes.iter().find(|n| n.starts_with("stockade/")).unwrap();
        assert!(
            stockade.contains(
                "youki:[2:INIT] 75% (15.0 ms per call), stockade-zygote 25% (5.0 ms per call)"
            ),
            "{stockade}"
        );
        // No per-call figure for this runtime: shares only, no made-up milliseconds.
        let runc = notes.iter().find(|n| n.starts_with("runc/")).unwrap();
        assert!(
            runc.contains("by process: runc 100%.") && !runc.contains("per call"),
            "{runc}"
        );
    }

    #[test]
    fn figures_render_with_inferno() {
        let mut sec = Section::new("flame", "F", "");
        sec.stacks.insert(
            "stockade/start_container".into(),
            vec![
                "containerd-shim;main;create 3".into(),
                "containerd;run 2".into(),
            ],
        );
        let figs = figures(&sec);
        assert_eq!(figs.len(), 1);
        assert_eq!(figs[0].0, "flame_stockade_start_container.svg");
        assert!(figs[0].1.contains("<svg") && figs[0].1.contains("create"));
    }
}
