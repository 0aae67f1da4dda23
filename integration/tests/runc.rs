//! The shared scenarios under runc: validates the harness (and that the hardening checks
//! fail for an unhardened runtime).

mod common;
use stockade_integration::runtimes::TestRuntime;

#[test]
fn runc_ctr_run_with_output() {
    common::ctr_run_with_output(&TestRuntime::runc());
}

#[test]
fn runc_ctr_exec_tty_and_no_tty() {
    common::ctr_exec_tty_and_no_tty(&TestRuntime::runc());
}

#[test]
fn runc_ctr_kill() {
    common::ctr_kill(&TestRuntime::runc());
}

#[test]
fn runc_ctr_metrics() {
    common::ctr_metrics(&TestRuntime::runc());
}

#[test]
fn runc_ctr_pause_resume() {
    common::ctr_pause_resume(&TestRuntime::runc());
}

#[test]
fn runc_ctr_oom_event() {
    common::ctr_oom_event(&TestRuntime::runc());
}

#[test]
fn runc_cri_pod_lifecycle() {
    common::cri_pod_lifecycle(&TestRuntime::runc());
}

#[test]
fn runc_cri_pod_shares_namespaces() {
    common::cri_pod_shares_namespaces(&TestRuntime::runc());
}

#[test]
fn runc_cri_update_resources() {
    common::cri_update_resources(&TestRuntime::runc());
}

#[test]
fn runc_cri_survives_containerd_restart() {
    common::cri_survives_containerd_restart(&TestRuntime::runc());
}
