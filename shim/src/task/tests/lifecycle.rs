//! Start, exits, exec, kill, wait, delete, pause: the process lifecycle and its races.

use containerd_shim_protos::api::Status;
use containerd_shim_protos::api::WaitRequest;
use containerd_shim_protos::ttrpc::Code;

use super::{code, strings, Fixture};

#[tokio::test]
async fn an_exit_during_start_is_published_after_task_start() {
    let f = Fixture::new();
    f.create("c1").await.unwrap();
    *f.launcher.exit_during_start.lock().unwrap() = Some((f.service.clone(), 7));
    f.start("c1", "").await.unwrap();
    assert_eq!(
        f.events(),
        strings(&["/tasks/create", "/tasks/start", "/tasks/exit"])
    );
    assert_eq!(f.status("c1", "").await, Status::STOPPED);
    let wait = f
        .service
        .wait(WaitRequest {
            id: "c1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(wait.exit_status, 7);
}

#[tokio::test]
async fn an_exit_before_start_stops_the_container_and_start_is_refused() {
    let f = Fixture::new();
    f.create("c1").await.unwrap();
    f.service.on_exit(1000, 137).await;
    let e = f.start("c1", "").await.unwrap_err();
    assert_eq!(code(&e), Code::FAILED_PRECONDITION);
    assert!(e.to_string().contains("container c1"), "{e}");
    assert_eq!(f.delete("c1", "").await.unwrap(), 137);
}

#[tokio::test]
async fn exec_processes_have_their_own_ids_and_lifecycle() {
    let f = Fixture::new();
    f.create("c1").await.unwrap();
    f.start("c1", "").await.unwrap();
    f.add_exec("c1", "e1").await.unwrap();
    let e = f.add_exec("c1", "e1").await.unwrap_err();
    assert_eq!(code(&e), Code::ALREADY_EXISTS);
    let e = f.start("c1", "nope").await.unwrap_err();
    assert_eq!(code(&e), Code::NOT_FOUND);
    // The exec's exit arrives before Start has recorded its pid.
    f.service.on_exit(1001, 0).await;
    assert_eq!(f.start("c1", "e1").await.unwrap(), 1001);
    assert_eq!(f.status("c1", "e1").await, Status::STOPPED);
    assert_eq!(f.status("c1", "").await, Status::RUNNING);
    f.events();
    assert_eq!(f.delete("c1", "e1").await.unwrap(), 0);
    let e = f.delete("c1", "e1").await.unwrap_err();
    assert_eq!(code(&e), Code::NOT_FOUND);

    f.add_exec("c1", "e2").await.unwrap();
    f.start("c1", "e2").await.unwrap();
    let e = f.delete("c1", "e2").await.unwrap_err();
    assert_eq!(code(&e), Code::FAILED_PRECONDITION, "{e}");
    assert_eq!(
        f.events(),
        strings(&["/tasks/exec-added", "/tasks/exec-started"])
    );
}

#[tokio::test]
async fn exec_and_kill_on_an_exited_container_say_it_is_not_running() {
    let f = Fixture::new();
    f.create("c1").await.unwrap();
    f.start("c1", "").await.unwrap();
    f.add_exec("c1", "e1").await.unwrap();
    f.service.on_exit(1000, 0).await;
    let e = f.add_exec("c1", "e2").await.unwrap_err();
    assert_eq!(code(&e), Code::FAILED_PRECONDITION);
    assert_eq!(e.to_string(), "container c1 is not running");
    let e = f.start("c1", "e1").await.unwrap_err();
    assert_eq!(e.to_string(), "container c1 is not running");
    let e = f.kill("c1", 15, false).await.unwrap_err();
    assert_eq!(code(&e), Code::NOT_FOUND);
}

/// The init exits between the shim's check and libcontainer's: NotFound, never Internal.
#[tokio::test]
async fn a_kill_racing_the_exit_is_not_found() {
    let f = Fixture::new();
    f.create("c1").await.unwrap();
    f.start("c1", "").await.unwrap();
    f.fail_launcher(Some("kill"));
    f.host.dead.lock().unwrap().push(1000);
    let e = f.kill("c1", 9, false).await.unwrap_err();
    assert_eq!(code(&e), Code::NOT_FOUND, "{e}");
    // While the init lives, a launcher failure is the shim's own.
    f.host.dead.lock().unwrap().clear();
    let e = f.kill("c1", 9, false).await.unwrap_err();
    assert_eq!(code(&e), Code::INTERNAL, "{e}");
}

#[tokio::test]
async fn wait_and_delete_race_with_the_exit() {
    let f = Fixture::new();
    f.create("c1").await.unwrap();
    f.start("c1", "").await.unwrap();
    let waiter = {
        let service = f.service.clone();
        tokio::spawn(async move {
            service
                .wait(WaitRequest {
                    id: "c1".into(),
                    ..Default::default()
                })
                .await
        })
    };
    let e = f.delete("c1", "").await.unwrap_err();
    assert_eq!(code(&e), Code::FAILED_PRECONDITION, "{e}");
    f.service.on_exit(1000, 42).await;
    assert_eq!(waiter.await.unwrap().unwrap().exit_status, 42);
    assert_eq!(f.delete("c1", "").await.unwrap(), 42);
    let e = f.delete("c1", "").await.unwrap_err();
    assert_eq!(code(&e), Code::NOT_FOUND);
}

/// `ctr tasks exec -t` (2.2) deletes the process once Wait returns, and its fifo reader
/// goes with it: Wait on a TTY process returns only once the output has reached the fifo.
/// ctr sends Wait before Start, when the process has no console yet.
#[tokio::test]
async fn wait_on_a_tty_exec_returns_once_its_output_is_drained() {
    let f = Fixture::new();
    f.create("c1").await.unwrap();
    f.start("c1", "").await.unwrap();
    f.add_exec("c1", "e1").await.unwrap();
    let waiter = {
        let service = f.service.clone();
        tokio::spawn(async move {
            service
                .wait(WaitRequest {
                    id: "c1".into(),
                    exec_id: "e1".into(),
                    ..Default::default()
                })
                .await
        })
    };
    tokio::task::yield_now().await;
    let pid = f.start("c1", "e1").await.unwrap();
    let (drained, rx) = tokio::sync::watch::channel(false);
    {
        let mut table = f.service.inner.table.lock().await;
        let p = table.get_mut("c1").unwrap().proc_mut("e1").unwrap();
        p.console = Some(crate::io::Console {
            master: std::fs::File::open("/dev/null").unwrap(),
            drained: rx,
        });
    }
    // The exit's event waits for the drain too: record it on a task of its own.
    let exit = {
        let service = f.service.clone();
        tokio::spawn(async move { service.on_exit(i32::try_from(pid).unwrap(), 3).await })
    };
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(f.status("c1", "e1").await, Status::STOPPED);
    assert!(
        !waiter.is_finished(),
        "Wait returned before the output was drained"
    );
    drained.send(true).unwrap();
    let wait = tokio::time::timeout(std::time::Duration::from_secs(1), waiter)
        .await
        .expect("Wait returns once drained")
        .unwrap()
        .unwrap();
    assert_eq!(wait.exit_status, 3);
    exit.await.unwrap();
}

#[tokio::test]
async fn pause_and_resume_follow_the_state_machine() {
    let f = Fixture::new();
    f.create("c1").await.unwrap();
    let e = f.service.pause_resume("c1", true).await.unwrap_err();
    assert_eq!(code(&e), Code::FAILED_PRECONDITION, "pause before start");
    f.start("c1", "").await.unwrap();
    f.service.pause_resume("c1", true).await.unwrap();
    assert_eq!(f.status("c1", "").await, Status::PAUSED);
    let e = f.service.pause_resume("c1", true).await.unwrap_err();
    assert!(e.to_string().contains("it is paused"), "{e}");
    f.fail_launcher(Some("resume"));
    f.service.pause_resume("c1", false).await.unwrap_err();
    assert_eq!(f.status("c1", "").await, Status::PAUSED, "still paused");
    f.fail_launcher(None);
    f.service.pause_resume("c1", false).await.unwrap();
    assert_eq!(f.status("c1", "").await, Status::RUNNING);
}

#[tokio::test]
async fn an_app_container_joins_its_running_sandbox_and_is_refused_without_one() {
    let f = Fixture::new();
    let bundle = f.bundle("app", Some("pod"), |_| {});
    let e = f.create_err("app", &bundle).await;
    assert_eq!(code(&e), Code::PERMISSION_DENIED);
    assert!(e.to_string().contains("rule `unknown-sandbox`"), "{e}");
    f.create("pod").await.unwrap();
    f.start("pod", "").await.unwrap();
    f.calls();
    f.service
        .create(f.create_request("app", &bundle))
        .await
        .unwrap();
    let (_, host) = f.calls();
    // The sandbox's range, as this shim holds it: the node's allocator is not asked again.
    assert_eq!(host, strings(&["open_bundle"]));
    let sandbox_range = f.host.ranges.lock().unwrap()["pod"];
    assert_eq!(
        f.host.opened.lock().unwrap().last(),
        Some(&sandbox_range),
        "the app container's bundle is opened to its sandbox's range"
    );
    // Deleting the app container gives no range back: the pod's stays with its sandbox.
    f.service.on_exit(1001, 0).await;
    f.delete("app", "").await.unwrap();
    let (_, host) = f.calls();
    assert_eq!(host, strings(&["unstage_binds", "sweep"]));
    assert_eq!(f.host.ranges.lock().unwrap().len(), 1);
}

#[tokio::test]
async fn a_checkpoint_restore_is_refused_before_anything_is_done() {
    let f = Fixture::new();
    let bundle = f.bundle("c1", None, |_| {});
    let mut req = f.create_request("c1", &bundle);
    req.checkpoint = "/var/lib/checkpoints/c1".into();
    let e = f.service.create(req).await.unwrap_err();
    assert_eq!(code(&e), Code::UNIMPLEMENTED);
    assert!(e.to_string().contains("checkpoint"), "{e}");
    assert_eq!(f.calls(), (vec![], vec![]));
    f.assert_bundle_clean("c1");
}
