//! Create: what each step does, and what a failure at each step undoes.

use containerd_shim_protos::api::Status;
use containerd_shim_protos::ttrpc::Code;
use stockade_runtime::oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use super::{code, strings, Fixture};
use crate::state;

#[tokio::test]
async fn a_container_runs_through_its_life_and_delete_undoes_create() {
    let f = Fixture::new();
    let pid = f.create("c1").await.unwrap();
    assert_eq!(pid, 1000);
    let (launcher, host) = f.calls();
    assert_eq!(launcher, strings(&["mount", "stage_volumes", "create"]));
    assert_eq!(host, strings(&["allocate_id_range", "open_bundle"]));
    let bundle = f.dir.path().join("c1");
    for file in [
        state::RECORD_FILE,
        state::SECCOMP_FILE,
        state::ORIGINAL_SPEC,
    ] {
        assert!(bundle.join(file).exists(), "{file}");
    }
    assert_eq!(f.status("c1", "").await, Status::CREATED);

    f.start("c1", "").await.unwrap();
    assert_eq!(f.status("c1", "").await, Status::RUNNING);
    let record = f.dir.path().join("state/containers/c1.json");
    assert!(record.exists(), "node state record for the exporter");
    f.service.on_exit(1000, 3).await;
    assert_eq!(f.status("c1", "").await, Status::STOPPED);
    assert_eq!(f.delete("c1", "").await.unwrap(), 3);
    let (launcher, host) = f.calls();
    assert_eq!(launcher, strings(&["start", "delete", "unmount"]));
    assert_eq!(host, strings(&["unstage_binds", "sweep", "release_range"]));
    assert_eq!(
        f.events(),
        strings(&[
            "/tasks/create",
            "/tasks/start",
            "/tasks/exit",
            "/tasks/delete"
        ])
    );
    f.assert_bundle_clean("c1");
    assert!(!record.exists(), "node state record removed");
    let e = f.status_err("c1").await;
    assert_eq!(code(&e), Code::NOT_FOUND);
}

/// Each Create step that fails runs exactly the undo of the steps before it, in reverse.
#[tokio::test]
async fn a_failure_at_each_create_step_undoes_exactly_what_was_done() {
    struct Case {
        launcher_fails: Option<&'static str>,
        host_fails: Option<&'static str>,
        launcher: &'static [&'static str],
        host: &'static [&'static str],
        code: Code,
    }
    let cases = [
        Case {
            launcher_fails: None,
            host_fails: Some("allocate_id_range"),
            launcher: &[],
            host: &["allocate_id_range"],
            code: Code::RESOURCE_EXHAUSTED,
        },
        Case {
            launcher_fails: Some("mount"),
            host_fails: None,
            launcher: &["mount", "unmount"],
            // The cgroup's directories may have been made beside the mount.
            host: &["allocate_id_range", "sweep", "release_range"],
            code: Code::INTERNAL,
        },
        Case {
            launcher_fails: None,
            host_fails: Some("open_bundle"),
            launcher: &["mount", "unmount"],
            host: &["allocate_id_range", "open_bundle", "sweep", "release_range"],
            code: Code::INTERNAL,
        },
        Case {
            launcher_fails: Some("stage_volumes"),
            host_fails: None,
            launcher: &["mount", "stage_volumes", "unmount"],
            host: &[
                "allocate_id_range",
                "open_bundle",
                "unstage_binds",
                "sweep",
                "release_range",
            ],
            code: Code::INTERNAL,
        },
        Case {
            launcher_fails: Some("create"),
            host_fails: None,
            launcher: &["mount", "stage_volumes", "create", "unmount"],
            host: &[
                "allocate_id_range",
                "open_bundle",
                "unstage_binds",
                "sweep",
                "release_range",
            ],
            code: Code::INTERNAL,
        },
    ];
    for (i, case) in cases.iter().enumerate() {
        let f = Fixture::new();
        f.fail_launcher(case.launcher_fails);
        f.fail_host(case.host_fails);
        let id = format!("c{i}");
        let e = f.create(&id).await.unwrap_err();
        assert_eq!(code(&e), case.code, "case {i}: {e}");
        assert!(e.to_string().contains("(injected)"), "case {i}: {e}");
        let (launcher, host) = f.calls();
        assert_eq!(launcher, strings(case.launcher), "case {i}: launcher");
        assert_eq!(host, strings(case.host), "case {i}: host");
        assert!(
            f.events().is_empty(),
            "case {i}: no event for a failed create"
        );
        f.assert_bundle_clean(&id);
        assert!(
            f.host.ranges.lock().unwrap().is_empty(),
            "case {i}: range kept"
        );
        // Nothing of the failed attempt is left in the table: the same id creates now.
        f.fail_launcher(None);
        f.fail_host(None);
        f.create(&id).await.unwrap();
    }
}

#[tokio::test]
async fn a_refused_container_gives_its_range_back_and_leaves_nothing() {
    let f = Fixture::new();
    let bundle = f.bundle("c1", None, |spec| {
        let mut linux = spec.linux().clone().unwrap_or_default();
        let mut namespaces: Vec<LinuxNamespace> = linux.namespaces().clone().unwrap_or_default();
        namespaces.retain(|n| n.typ() != LinuxNamespaceType::Pid);
        linux.set_namespaces(Some(namespaces));
        spec.set_linux(Some(linux));
    });
    let e = f.create_err("c1", &bundle).await;
    assert_eq!(code(&e), Code::PERMISSION_DENIED);
    assert!(e.to_string().contains("host-pid"), "{e}");
    let (launcher, host) = f.calls();
    assert!(launcher.is_empty(), "{launcher:?}");
    assert_eq!(host, strings(&["allocate_id_range", "release_range"]));
    f.assert_bundle_clean("c1");
}

#[tokio::test]
async fn when_the_sweep_fails_the_range_and_the_record_are_kept_for_shim_delete() {
    let f = Fixture::new();
    f.fail_launcher(Some("create"));
    f.fail_host(Some("sweep"));
    f.create("c1").await.unwrap_err();
    let (_, host) = f.calls();
    assert_eq!(
        host,
        strings(&["allocate_id_range", "open_bundle", "unstage_binds", "sweep"])
    );
    assert!(f.dir.path().join("c1").join(state::RECORD_FILE).exists());
    assert_eq!(f.host.ranges.lock().unwrap().len(), 1);
}
