//! Stockade through CRI (runtime handlers `stockade` and `stockade-strict`).

mod common;
use stockade_integration::runtimes::TestRuntime;

fn stockade() -> TestRuntime {
    TestRuntime::stockade().expect("profiles/default.toml")
}

#[test]
fn stockade_cri_pod_lifecycle() {
    common::cri_pod_lifecycle(&stockade());
}

#[test]
fn stockade_strict_cri_pod_lifecycle() {
    common::cri_pod_lifecycle(&TestRuntime::stockade_strict().expect("profiles/strict.toml"));
}

#[test]
fn stockade_cri_pod_shares_namespaces() {
    common::cri_pod_shares_namespaces(&stockade());
}

#[test]
fn stockade_cri_update_resources() {
    common::cri_update_resources(&stockade());
}

#[test]
fn stockade_cri_survives_containerd_restart() {
    common::cri_survives_containerd_restart(&stockade());
}

#[test]
fn stockade_cri_refuses_privileged() {
    common::cri_refuses_privileged(&stockade());
}

#[test]
fn stockade_cri_refuses_host_pid() {
    common::cri_refuses_host_pid(&stockade());
}

#[test]
fn stockade_cri_refuses_untrusted_registry() {
    common::cri_refuses_untrusted_registry(&stockade());
}

#[test]
fn stockade_cri_pods_get_distinct_id_ranges() {
    common::cri_pods_get_distinct_id_ranges(&stockade());
}

const GIB: i64 = 1 << 30;

/// profiles/default.toml: memory ceiling 8Gi, on_excess = "clamp".
#[test]
fn stockade_cri_memory_above_ceiling_is_clamped() {
    common::cri_memory_above_ceiling(&stockade(), 16 * GIB, Some(8 * GIB as u64));
}

/// profiles/strict.toml: memory ceiling 2Gi, on_excess = "refuse".
#[test]
fn stockade_strict_cri_memory_above_ceiling_is_refused() {
    common::cri_memory_above_ceiling(
        &TestRuntime::stockade_strict().expect("profiles/strict.toml"),
        4 * GIB,
        None,
    );
}
