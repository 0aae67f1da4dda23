//! A TTY process that exits at once still has its output delivered, also when the node is
//! busy. containerd's client gives up a fifo reader it has not seen open by the time it
//! deletes the exited process, and (2.x) closes the reader it has, dropping what it had not
//! read yet. The shim opens a TTY process's fifos before the process runs, and publishes
//! the exit and answers Wait only once the client has read the last output (shim/src/io.rs,
//! shim/src/task/query.rs). runc's shim does neither: it runs the same execs in the same
//! run, and its losses are reported.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use stockade_integration::image::BUSYBOX_IMAGE;
use stockade_integration::runtimes::TestRuntime;
use stockade_integration::Containerd;

const EXECS: usize = 100;

#[test]
fn stockade_tty_exec_output_survives_a_busy_node() {
    let stockade = TestRuntime::stockade().expect("profiles/default.toml");
    let c = Containerd::start().expect("starting a private containerd");
    let runc_lost = lost_outputs(&c, &TestRuntime::runc(), "tty-runc");
    let lost = lost_outputs(&c, &stockade, "tty");
    eprintln!(
        "TTY execs on a busy node: runc's shim lost {} of {EXECS} outputs, Stockade {}",
        runc_lost.len(),
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} of {EXECS} TTY execs lost their output: {lost:#?}",
        lost.len()
    );
    let left = c.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

/// Run EXECS `tty` execs with a TTY in container `name` under `rt`, with both cores kept
/// busy; returns the execs whose output did not arrive.
fn lost_outputs(c: &Containerd, rt: &TestRuntime, name: &str) -> Vec<String> {
    let mut args = vec!["run", "-d"];
    let rt_args = rt.ctr_run_args();
    args.extend(rt_args.iter().map(String::as_str));
    args.extend([BUSYBOX_IMAGE, name, "sleep", "600"]);
    c.ctr_ok(&args).expect("ctr run -d");
    c.wait_task_status(name, "RUNNING").expect("task running");

    // With two busy cores the client's reader goroutine runs late.
    let stop = Arc::new(AtomicBool::new(false));
    let hogs: Vec<_> = (0..2)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let mut lost = Vec::new();
    for i in 0..EXECS {
        let exec_id = format!("{name}-{i}");
        let out = c.ctr_tty(&["tasks", "exec", "-t", "--exec-id", &exec_id, name, "tty"]);
        match out {
            // `tty` exits 0 only on a terminal: a success without its output lost it.
            Ok(o) if o.status.success() => {
                if !o.output.contains("/dev/pts/") {
                    lost.push(format!("{exec_id}: {:?}", o.output));
                }
            }
            other => {
                stop.store(true, Ordering::Relaxed);
                panic!("{} exec {exec_id}: {other:?}", rt.label);
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    for h in hogs {
        let _ = h.join();
    }

    let _ = c.ctr(&["tasks", "kill", "-s", "SIGKILL", name]);
    c.wait_task_status(name, "STOPPED").expect("task stopped");
    c.ctr_ok(&["tasks", "rm", name]).expect("tasks rm");
    c.ctr_ok(&["containers", "rm", name])
        .expect("containers rm");
    lost
}
