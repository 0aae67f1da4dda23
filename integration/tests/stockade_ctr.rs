//! Stockade through `ctr` (runtime io.containerd.stockade.v1, profile default.toml).

mod common;
use stockade_integration::runtimes::TestRuntime;

fn stockade() -> TestRuntime {
    TestRuntime::stockade().expect("profiles/default.toml")
}

#[test]
fn stockade_ctr_run_with_output() {
    common::ctr_run_with_output(&stockade());
}

#[test]
fn stockade_ctr_exec_tty_and_no_tty() {
    common::ctr_exec_tty_and_no_tty(&stockade());
}

#[test]
fn stockade_ctr_kill() {
    common::ctr_kill(&stockade());
}

#[test]
fn stockade_ctr_metrics() {
    common::ctr_metrics(&stockade());
}

#[test]
fn stockade_ctr_pause_resume() {
    common::ctr_pause_resume(&stockade());
}

#[test]
fn stockade_ctr_oom_event() {
    common::ctr_oom_event(&stockade());
}
