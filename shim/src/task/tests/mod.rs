//! The Task service against a fake launcher, host and event sink: no root, no containerd.
//! Each test runs real Create/Start/Exec/Delete logic over a bundle in a temp dir and
//! checks the calls the service made, the events it published and the files it left.

mod create;
mod lifecycle;
mod volumes;

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use containerd_shim_protos::api::{
    CreateTaskRequest, DeleteRequest, ExecProcessRequest, KillRequest, StartRequest, StateRequest,
    Status,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::ttrpc::Code;
use containerd_shim_protos::types::mount::Mount;
use stockade_runtime::hardener::ResolvedSources;
use stockade_runtime::idrange::IdRange;
use stockade_runtime::kubelet::{KubeletRange, KubeletSettings};
use stockade_runtime::oci_spec::runtime::{Process, Spec};
use stockade_runtime::profile::IdPoolSettings;
use stockade_runtime::state_dir::StateDir;
use tokio::sync::mpsc;

use super::events::{EventSink, Outgoing};
use super::{ShimConfig, TaskService};
use crate::error::ShimError;
use crate::host::Host;
use crate::launcher::{Launcher, Request};
use crate::state::{self, Record};

type Log = Arc<Mutex<Vec<String>>>;

fn push(log: &Log, entry: &str) {
    log.lock().unwrap().push(entry.to_string());
}

fn take(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.lock().unwrap())
}

/// Records each request by its op; `fail` names an op that fails. On Start it can deliver
/// an exit while Start is still under way, as the reaper would.
struct FakeLauncher {
    log: Log,
    fail: Mutex<Option<&'static str>>,
    next_pid: AtomicI32,
    exit_during_start: Mutex<Option<(TaskService, i32)>>,
}

fn op(req: &Request) -> &'static str {
    match req {
        Request::Mount { .. } => "mount",
        Request::Unmount { .. } => "unmount",
        Request::StageVolumes { .. } => "stage_volumes",
        Request::Create { .. } => "create",
        Request::Start { .. } => "start",
        Request::Exec { .. } => "exec",
        Request::Kill { .. } => "kill",
        Request::Delete { .. } => "delete",
        Request::Pause { .. } => "pause",
        Request::Resume { .. } => "resume",
    }
}

#[async_trait]
impl Launcher for FakeLauncher {
    async fn call(&self, req: Request, _fds: Vec<OwnedFd>) -> anyhow::Result<Option<i32>> {
        let op = op(&req);
        push(&self.log, op);
        if *self.fail.lock().unwrap() == Some(op) {
            anyhow::bail!("{op} failed (injected)");
        }
        if op == "start" {
            let exit = self.exit_during_start.lock().unwrap().take();
            if let Some((service, code)) = exit {
                service.on_exit(1000, code).await;
            }
        }
        Ok(matches!(op, "create" | "exec").then(|| self.next_pid.fetch_add(1, Ordering::SeqCst)))
    }

    fn helper_exited(&self, pid: i32) -> bool {
        pid == 1
    }
}

/// Records each host effect; `fail` names one that fails. Processes are "alive" until
/// the test says they died.
struct FakeHost {
    log: Log,
    fail: Mutex<Option<&'static str>>,
    ranges: Mutex<HashMap<String, IdRange>>,
    dead: Mutex<Vec<i32>>,
    /// What kubelet_range answers.
    kubelet: Mutex<Option<KubeletRange>>,
    /// The range each open_bundle was given, in call order.
    opened: Mutex<Vec<IdRange>>,
}

impl FakeHost {
    fn step(&self, name: &'static str) -> anyhow::Result<()> {
        push(&self.log, name);
        if *self.fail.lock().unwrap() == Some(name) {
            anyhow::bail!("{name} failed (injected)");
        }
        Ok(())
    }
}

impl Host for FakeHost {
    fn allocate_id_range(
        &self,
        sandbox_id: &str,
        _pool: IdPoolSettings,
    ) -> anyhow::Result<IdRange> {
        self.step("allocate_id_range")?;
        let mut ranges = self.ranges.lock().unwrap();
        let next = IdRange {
            first: 1_000_000 + 65_536 * ranges.len() as u32,
            size: 65_536,
        };
        Ok(*ranges.entry(sandbox_id.to_string()).or_insert(next))
    }

    fn release_id_range(
        &self,
        sandbox_id: &str,
        _pool: IdPoolSettings,
    ) -> anyhow::Result<Option<IdRange>> {
        self.step("release_range")?;
        Ok(self.ranges.lock().unwrap().remove(sandbox_id))
    }

    fn open_bundle(&self, _spec: &Spec, _bundle: &Path, range: IdRange) -> anyhow::Result<()> {
        self.opened.lock().unwrap().push(range);
        self.step("open_bundle")
    }

    fn check_reachable(&self, _bundle: &Path, _range: IdRange) -> anyhow::Result<()> {
        Ok(())
    }

    fn resolve_destinations(&self, _spec: &mut Spec, _bundle: &Path) -> anyhow::Result<()> {
        Ok(())
    }

    fn unstage_binds(&self, _bundle: &Path) {
        push(&self.log, "unstage_binds");
    }

    fn resolve_sources(&self, _sources: &[PathBuf]) -> ResolvedSources {
        ResolvedSources::new()
    }

    fn kubelet_range(&self, _settings: &KubeletSettings) -> anyhow::Result<Option<KubeletRange>> {
        Ok(*self.kubelet.lock().unwrap())
    }

    fn is_cgroup_v1(&self) -> bool {
        false
    }

    fn make_cgroup_dirs(&self, _cgroups_path: &str) -> anyhow::Result<()> {
        Ok(())
    }

    fn sweep_cgroups(&self, _id: &str, _record: &Record) -> anyhow::Result<()> {
        self.step("sweep")
    }

    fn watch_oom(&self, _id: &str, _path: &str) -> anyhow::Result<mpsc::Receiver<String>> {
        Err(anyhow::anyhow!("no cgroups here"))
    }

    fn update_cgroup(
        &self,
        _path: &str,
        _r: &stockade_runtime::oci_spec::runtime::LinuxResources,
    ) -> anyhow::Result<()> {
        self.step("update")
    }

    fn cgroup_pids(&self, _path: &str) -> anyhow::Result<Vec<i32>> {
        Ok(Vec::new())
    }

    fn cgroup_stats(&self, _path: &str) -> anyhow::Result<Any> {
        Ok(Any::new())
    }

    fn left_shim_binary(&self, _pid: i32) -> bool {
        true
    }

    fn is_alive(&self, pid: i32) -> bool {
        !self.dead.lock().unwrap().contains(&pid)
    }
}

#[derive(Default)]
struct RecordedEvents(Log);

#[async_trait]
impl EventSink for RecordedEvents {
    async fn publish(&self, event: Outgoing) {
        push(&self.0, &event.topic);
    }
}

/// A service with fakes, over a temp dir holding the profile, the state dir and bundles.
struct Fixture {
    dir: tempfile::TempDir,
    service: TaskService,
    launcher: Arc<FakeLauncher>,
    host: Arc<FakeHost>,
    events: Log,
    profile: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
        let text = std::fs::read_to_string(shipped.join("default.toml")).unwrap();
        let audit = dir.path().join("audit.jsonl");
        let text = text
            .replace(
                "profile = \"seccomp/default.json\"",
                &format!("profile = {:?}", shipped.join("seccomp/default.json")),
            )
            .replace(
                "log = \"/var/log/stockade/audit.jsonl\"",
                &format!("log = {audit:?}"),
            );
        let profile = dir.path().join("default.toml");
        std::fs::write(&profile, text).unwrap();
        let state = StateDir::new(dir.path().join("state")).unwrap();
        let launcher = Arc::new(FakeLauncher {
            log: Log::default(),
            fail: Mutex::new(None),
            next_pid: AtomicI32::new(1000),
            exit_during_start: Mutex::new(None),
        });
        let host = Arc::new(FakeHost {
            log: Log::default(),
            fail: Mutex::new(None),
            ranges: Mutex::new(HashMap::new()),
            dead: Mutex::new(Vec::new()),
            kubelet: Mutex::new(None),
            opened: Mutex::new(Vec::new()),
        });
        let events = Log::default();
        let service = TaskService::new(
            ShimConfig {
                namespace: "test".into(),
                state,
            },
            launcher.clone(),
            host.clone(),
            Arc::new(RecordedEvents(events.clone())),
        );
        Fixture {
            dir,
            service,
            launcher,
            host,
            events,
            profile,
        }
    }

    /// A bundle with a config.json for container `id` (a pod of its own when `sandbox` is
    /// None, else an app container of that sandbox), with one read-only hostPath volume.
    fn bundle(&self, id: &str, sandbox: Option<&str>, edit: impl FnOnce(&mut Spec)) -> PathBuf {
        let bundle = self.dir.path().join(id);
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        let mut spec = Spec::default();
        let mut mounts = spec.mounts().clone().unwrap_or_default();
        mounts.push(
            serde_json::from_value(serde_json::json!({
                "destination": "/data", "type": "bind", "source": "/srv/data",
                "options": ["rbind", "ro"]
            }))
            .unwrap(),
        );
        spec.set_mounts(Some(mounts));
        if let Some(sandbox) = sandbox {
            spec.set_annotations(Some(HashMap::from([
                (
                    "io.kubernetes.cri.container-type".into(),
                    "container".into(),
                ),
                ("io.kubernetes.cri.sandbox-id".into(), sandbox.into()),
            ])));
        }
        edit(&mut spec);
        spec.save(bundle.join("config.json")).unwrap();
        bundle
    }

    fn create_request(&self, id: &str, bundle: &Path) -> CreateTaskRequest {
        let path = self.profile.to_string_lossy().into_owned();
        let mut value = vec![0x12, path.len() as u8];
        value.extend_from_slice(path.as_bytes());
        CreateTaskRequest {
            id: id.into(),
            bundle: bundle.to_string_lossy().into_owned(),
            rootfs: vec![Mount {
                type_: "bind".into(),
                source: "/nonexistent-layer".into(),
                ..Default::default()
            }],
            options: Some(Any {
                type_url: "cri.runtimeoptions.v1.Options".into(),
                value,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        }
    }

    /// Create from `bundle`, which must fail: the error.
    async fn create_err(&self, id: &str, bundle: &Path) -> ShimError {
        self.service
            .create(self.create_request(id, bundle))
            .await
            .unwrap_err()
    }

    async fn create(&self, id: &str) -> Result<u32, ShimError> {
        let bundle = self.bundle(id, None, |_| {});
        let req = self.create_request(id, &bundle);
        self.service.create(req).await.map(|r| r.pid)
    }

    fn fail_launcher(&self, op: Option<&'static str>) {
        *self.launcher.fail.lock().unwrap() = op;
    }

    fn fail_host(&self, step: Option<&'static str>) {
        *self.host.fail.lock().unwrap() = step;
    }

    fn calls(&self) -> (Vec<String>, Vec<String>) {
        (take(&self.launcher.log), take(&self.host.log))
    }

    fn events(&self) -> Vec<String> {
        take(&self.events)
    }

    async fn start(&self, id: &str, exec_id: &str) -> Result<u32, ShimError> {
        let req = StartRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.service.start(req).await.map(|r| r.pid)
    }

    async fn delete(&self, id: &str, exec_id: &str) -> Result<u32, ShimError> {
        let req = DeleteRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.service.delete(req).await.map(|r| r.exit_status)
    }

    async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<(), ShimError> {
        let req = KillRequest {
            id: id.into(),
            signal,
            all,
            ..Default::default()
        };
        self.service.kill(req).await.map(|_| ())
    }

    async fn add_exec(&self, id: &str, exec_id: &str) -> Result<(), ShimError> {
        let process = serde_json::to_vec(&Process::default()).unwrap();
        let req = ExecProcessRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            spec: Some(Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                value: process,
                ..Default::default()
            })
            .into(),
            ..Default::default()
        };
        self.service.exec(req).await.map(|_| ())
    }

    async fn status(&self, id: &str, exec_id: &str) -> Status {
        let req = StateRequest {
            id: id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        self.service.state(req).await.unwrap().status.unwrap()
    }

    /// What a failed Create must not leave in its bundle.
    fn assert_bundle_clean(&self, id: &str) {
        let bundle = self.dir.path().join(id);
        for file in [state::RECORD_FILE, state::SECCOMP_FILE] {
            assert!(!bundle.join(file).exists(), "{file} left in the bundle");
        }
    }
}

impl Fixture {
    async fn status_err(&self, id: &str) -> ShimError {
        let req = StateRequest {
            id: id.into(),
            ..Default::default()
        };
        self.service.state(req).await.unwrap_err()
    }
}

pub(super) fn code(e: &ShimError) -> Code {
    e.code()
}

pub(super) fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}
