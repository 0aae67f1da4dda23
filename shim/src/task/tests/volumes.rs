//! Create with volumes, hostPaths, kubelet-mapped pods and a profile that overlaps kubelet.

use std::collections::HashMap;

use containerd_shim_protos::ttrpc::Code;
use stockade_runtime::kubelet::{KubeletRange, RangeOrigin};
use stockade_runtime::oci_spec::runtime::{LinuxIdMapping, Spec};

use super::{code, strings, Fixture};

/// CRI annotations of a sandbox (`sandbox` None) or an app container of `sandbox`, with
/// kubelet's mapping `0:first:65536`.
fn kubelet_pod(spec: &mut Spec, sandbox: Option<&str>, first: u32) {
    let mut a = HashMap::from([(
        "io.kubernetes.cri.container-type".to_string(),
        if sandbox.is_some() {
            "container"
        } else {
            "sandbox"
        }
        .to_string(),
    )]);
    if let Some(s) = sandbox {
        a.insert("io.kubernetes.cri.sandbox-id".into(), s.into());
    }
    spec.set_annotations(Some(a));
    let mapping: LinuxIdMapping = serde_json::from_value(
        serde_json::json!({"containerID": 0, "hostID": first, "size": 65536}),
    )
    .unwrap();
    let mut linux = spec.linux().clone().unwrap_or_default();
    linux.set_uid_mappings(Some(vec![mapping]));
    linux.set_gid_mappings(Some(vec![mapping]));
    spec.set_linux(Some(linux));
}

#[tokio::test]
async fn a_profile_overlapping_kubelets_range_is_refused_before_anything_is_done() {
    let f = Fixture::new();
    *f.host.kubelet.lock().unwrap() = Some(KubeletRange {
        first: 65_536,
        end: 1 << 32,
        origin: RangeOrigin::KubeletDefault,
    });
    let e = f.create("c1").await.unwrap_err();
    assert_eq!(code(&e), Code::INVALID_ARGUMENT);
    let text = e.to_string();
    assert!(
        text.contains("default.toml refused") && text.contains("overlaps kubelet's"),
        "{text}"
    );
    assert_eq!(f.calls(), (vec![], vec![]));
    f.assert_bundle_clean("c1");
}

#[tokio::test]
async fn a_writable_host_path_is_refused_and_the_range_given_back() {
    let f = Fixture::new();
    let bundle = f.bundle("c1", None, |spec| {
        let mut mounts = spec.mounts().clone().unwrap();
        mounts
            .last_mut()
            .unwrap()
            .set_options(Some(strings(&["rbind", "rw"])));
        spec.set_mounts(Some(mounts));
    });
    let e = f.create_err("c1", &bundle).await;
    assert_eq!(code(&e), Code::PERMISSION_DENIED);
    assert!(
        e.to_string().contains("`host-path`") && e.to_string().contains("/srv/data"),
        "{e}"
    );
    let (launcher, host) = f.calls();
    assert!(launcher.is_empty(), "{launcher:?}");
    assert_eq!(host, strings(&["allocate_id_range", "release_range"]));
    f.assert_bundle_clean("c1");
}

#[tokio::test]
async fn a_kubelet_mapped_pod_runs_in_kubelets_mapping_and_takes_no_range() {
    const FIRST: u32 = 1_310_720;
    let f = Fixture::new();
    let sandbox = f.bundle("pod", None, |s| kubelet_pod(s, None, FIRST));
    f.service
        .create(f.create_request("pod", &sandbox))
        .await
        .unwrap();
    let (launcher, host) = f.calls();
    assert_eq!(launcher, strings(&["mount", "stage_volumes", "create"]));
    assert_eq!(host, strings(&["open_bundle"]), "no range allocated");
    let hardened: Spec = Spec::load(sandbox.join("config.json")).unwrap();
    let linux = hardened.linux().as_ref().unwrap();
    let m = linux.uid_mappings().as_ref().unwrap()[0];
    assert_eq!(
        (m.container_id(), m.host_id(), m.size()),
        (0, FIRST, 65_536)
    );
    f.start("pod", "").await.unwrap();

    // An app container with the same mapping joins; another mapping is an error.
    let app = f.bundle("app", Some("pod"), |s| kubelet_pod(s, Some("pod"), FIRST));
    f.service
        .create(f.create_request("app", &app))
        .await
        .unwrap();
    f.start("app", "").await.unwrap();
    // An exec is hardened against the app's hardened spec: kubelet's mapping again.
    f.add_exec("app", "e1").await.unwrap();
    let other = f.bundle("other", Some("pod"), |s| {
        kubelet_pod(s, Some("pod"), FIRST + 65_536)
    });
    let e = f.create_err("other", &other).await;
    assert_eq!(code(&e), Code::INVALID_ARGUMENT);
    assert!(e.to_string().contains("differs from its sandbox's"), "{e}");
    f.calls();
    // Deleting the sandbox gives nothing back to Stockade's pool.
    f.service.on_exit(1000, 0).await;
    f.delete("pod", "").await.unwrap();
    let (_, host) = f.calls();
    assert!(!host.contains(&"allocate_id_range".to_string()), "{host:?}");
    assert!(f.host.ranges.lock().unwrap().is_empty());
}

#[tokio::test]
async fn kubelet_mappings_below_the_floor_or_in_the_pool_are_refused_by_name() {
    for first in [0, 4096, 1_073_741_824] {
        let f = Fixture::new();
        let bundle = f.bundle("pod", None, |s| kubelet_pod(s, None, first));
        let e = f.create_err("pod", &bundle).await;
        assert_eq!(code(&e), Code::PERMISSION_DENIED, "{first}: {e}");
        assert!(e.to_string().contains("`userns-mapping`"), "{first}: {e}");
        assert_eq!(f.calls(), (vec![], vec![]), "{first}");
        f.assert_bundle_clean("pod");
    }
}
