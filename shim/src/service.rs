//! The shim v2 Task service: containerd's calls, carried out through the zygote.
//!
//! Decisions are the hardener's: Create loads the profile, hardens the bundle's spec and
//! writes it back; this service only does what the hardened spec says, and undoes all of
//! it when anything fails.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim_protos::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PauseRequest,
    PidsRequest, PidsResponse, ProcessInfo, ResizePtyRequest, ResumeRequest, ShutdownRequest,
    StartRequest, StartResponse, StateRequest, StateResponse, StatsRequest, StatsResponse, Status,
    UpdateTaskRequest, WaitRequest, WaitResponse,
};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{MessageDyn, MessageField};
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::context::Context;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use containerd_shim_protos::ttrpc::{self, Code};
use stockade_runtime::audit::AuditEvent;
use stockade_runtime::hardener::{self, HardenContext, HardenError};
use stockade_runtime::idrange::IdRange;
use stockade_runtime::node_state;
use stockade_runtime::oci_spec::runtime::{LinuxResources, Process as OciProcess, Spec};
use stockade_runtime::pod::{PodIdentity, ANNOTATION_IMAGE_NAME};
use stockade_runtime::profile::Profile;
use tokio::sync::{watch, Mutex, Notify};

use crate::container::FilterPlan;
use crate::io::{self, Console, ConsoleSocket, StdioPaths};
use crate::state::{self, Record};
use crate::zygote::{Request, RootfsMount, Zygote};
use crate::{audit, binds, cgroups, cleanup, oom, podrange, stats};

/// How long TaskExit waits for a TTY's output to reach the fifo.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(2);
/// Exits of pids nobody claimed (libcontainer's intermediate processes, or a process that
/// exited before its Create/Start answer arrived) are kept this long.
const UNCLAIMED_TTL: Duration = Duration::from_secs(60);

type TtrpcResult<T> = ttrpc::Result<T>;

fn err(code: Code, msg: impl std::fmt::Display) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg))
}

fn internal(e: anyhow::Error) -> ttrpc::Error {
    err(Code::INTERNAL, format!("{e:#}"))
}

fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
        ..Default::default()
    }
}

/// An exec's process file and the copy handed to libcontainer (container.rs).
fn remove_process_files(file: &Path) {
    let _ = std::fs::remove_file(file);
    let _ = std::fs::remove_file(file.with_extension("libcontainer.json"));
}

/// libcontainer's start only signals the init, which then installs the seccomp filters
/// and execs: wait (briefly) until `pid` no longer runs the shim's own binary, so Start
/// returns with the workload running and hardened.
async fn wait_exec(pid: i32) {
    use std::os::unix::fs::MetadataExt;
    let Ok(own) = std::fs::metadata("/proc/self/exe") else {
        return;
    };
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match std::fs::metadata(format!("/proc/{pid}/exe")) {
            Ok(md) if md.dev() == own.dev() && md.ino() == own.ino() => {}
            // Exec'd (another binary), or gone (exited, or a zombie): done either way.
            _ => return,
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tracing::warn!(pid, "the process did not exec within 2s of Start");
}

/// The container's root (a host ID of the pod's range) must traverse the bundle to reach
/// its rootfs: group-owned by the range's root group, mode 0710, as containerd 1.7 does
/// for user-namespaced bundles.
fn open_bundle_to(bundle: &Path, range: IdRange) -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(bundle, None, Some(range.first))
        .map_err(|e| anyhow::anyhow!("chown {}: {e}", bundle.display()))?;
    std::fs::set_permissions(bundle, std::fs::Permissions::from_mode(0o710))
        .map_err(|e| anyhow::anyhow!("chmod {}: {e}", bundle.display()))
}

/// An annotation's value in an error: quoted (control characters escaped) and at most 100
/// characters, however long the value.
fn quoted(value: &str) -> String {
    const MAX: usize = 100;
    match value.char_indices().nth(MAX) {
        None => format!("{value:?}"),
        Some((end, _)) => format!("{:?}... ({} bytes)", &value[..end], value.len()),
    }
}

/// The container's root must be a directory by now (containerd's rootfs is mounted): said
/// here, with the path, rather than as libcontainer's "failed to prepare rootfs".
fn check_root_dir(spec: &Spec, bundle: &Path) -> anyhow::Result<()> {
    let Some(root) = spec.root() else {
        return Ok(());
    };
    let path = bundle.join(root.path());
    match std::fs::metadata(&path) {
        Ok(md) if md.is_dir() => Ok(()),
        Ok(_) => Err(anyhow::anyhow!(
            "root.path {}: not a directory",
            path.display()
        )),
        Err(e) => Err(anyhow::anyhow!("root.path {}: {e}", path.display())),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcStatus {
    Created,
    Running,
    Paused,
    Stopped,
}

impl ProcStatus {
    fn proto(self) -> Status {
        match self {
            ProcStatus::Created => Status::CREATED,
            ProcStatus::Running => Status::RUNNING,
            ProcStatus::Paused => Status::PAUSED,
            ProcStatus::Stopped => Status::STOPPED,
        }
    }
}

type Exit = Option<(u32, Timestamp)>;

/// The container's init or one exec process.
struct Proc {
    pid: i32,
    status: ProcStatus,
    exit: watch::Sender<Exit>,
    stdio: StdioPaths,
    console: Option<Console>,
    /// Exec processes: the hardened OCI Process file.
    process_file: Option<PathBuf>,
    /// Start is in progress: an exit seen now is published after TaskStart/ExecStarted.
    starting: bool,
    deferred_exit: Option<TaskExit>,
}

impl Proc {
    fn new(stdio: StdioPaths) -> Proc {
        Proc {
            pid: 0,
            status: ProcStatus::Created,
            exit: watch::channel(None).0,
            stdio,
            console: None,
            process_file: None,
            starting: false,
            deferred_exit: None,
        }
    }

    fn exited(&self) -> Exit {
        self.exit.borrow().clone()
    }
}

struct Container {
    bundle: PathBuf,
    pod: PodIdentity,
    image: Option<String>,
    /// When Create arrived, for the start latency in the node state record.
    created_at: Instant,
    record: Record,
    profile: Arc<Profile>,
    ctx: HardenContext,
    /// The hardened spec, base for hardening exec processes.
    spec: Spec,
    cgroups_path: String,
    init: Proc,
    execs: HashMap<String, Proc>,
}

impl Container {
    fn proc(&self, exec_id: &str) -> TtrpcResult<&Proc> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs
            .get(exec_id)
            .ok_or_else(|| err(Code::NOT_FOUND, format!("exec {exec_id} not found")))
    }
}

pub struct Inner {
    namespace: String,
    root: PathBuf,
    zygote: Arc<Zygote>,
    publisher: RemotePublisher,
    containers: Mutex<HashMap<String, Container>>,
    unclaimed: std::sync::Mutex<HashMap<i32, (i32, Instant)>>,
    pub shutdown: Notify,
}

#[derive(Clone)]
pub struct Service {
    pub inner: Arc<Inner>,
}

impl Service {
    pub fn new(namespace: &str, zygote: Arc<Zygote>, publisher: RemotePublisher) -> Service {
        Service {
            inner: Arc::new(Inner {
                namespace: namespace.to_string(),
                root: state::libcontainer_root(namespace),
                zygote,
                publisher,
                containers: Mutex::new(HashMap::new()),
                unclaimed: std::sync::Mutex::new(HashMap::new()),
                shutdown: Notify::new(),
            }),
        }
    }
}

impl Inner {
    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        if let Err(e) = self
            .publisher
            .publish(Context::default(), topic, &self.namespace, event)
            .await
        {
            tracing::warn!(topic, error = %e, "publishing event failed");
        }
    }

    /// Called by the reaper for every child that exited.
    pub async fn on_exit(self: &Arc<Self>, pid: i32, code: i32) {
        if pid == self.zygote.pid {
            tracing::error!(
                pid,
                code,
                "the zygote exited: no new containers can be created"
            );
            return;
        }
        if !self.claim_exit(pid, code).await {
            let mut unclaimed = self.unclaimed.lock().unwrap_or_else(|e| e.into_inner());
            unclaimed.retain(|_, (_, at)| at.elapsed() < UNCLAIMED_TTL);
            unclaimed.insert(pid, (code, Instant::now()));
        }
    }

    /// Record the exit of a known process; false when no process has this pid.
    async fn claim_exit(self: &Arc<Self>, pid: i32, code: i32) -> bool {
        let exited_at = now();
        let (event, drained) = {
            let mut containers = self.containers.lock().await;
            let mut found = None;
            'search: for (cid, c) in containers.iter_mut() {
                let procs = std::iter::once(("", &mut c.init))
                    .chain(c.execs.iter_mut().map(|(k, v)| (k.as_str(), v)));
                for (eid, p) in procs {
                    if p.pid == pid && p.status != ProcStatus::Stopped {
                        p.status = ProcStatus::Stopped;
                        let code = u32::try_from(code).unwrap_or(255);
                        p.exit.send_replace(Some((code, exited_at.clone())));
                        tracing::info!(container = %cid, exec = %eid, pid, code, "process exited");
                        let event = TaskExit {
                            container_id: cid.clone(),
                            id: if eid.is_empty() {
                                cid.clone()
                            } else {
                                eid.to_string()
                            },
                            pid: u32::try_from(pid).unwrap_or(0),
                            exit_status: code,
                            exited_at: MessageField::some(exited_at.clone()),
                            ..Default::default()
                        };
                        if p.starting {
                            p.deferred_exit = Some(event);
                            return true;
                        }
                        found = Some((event, p.console.as_ref().map(|c| c.drained.clone())));
                        break 'search;
                    }
                }
            }
            match found {
                Some(f) => f,
                None => return false,
            }
        };
        self.publish_exit(event, drained).await;
        true
    }

    /// TaskExit, once a TTY's output has reached the fifo.
    async fn publish_exit(&self, event: TaskExit, drained: Option<watch::Receiver<bool>>) {
        if let Some(mut drained) = drained {
            let _ = tokio::time::timeout(DRAIN_TIMEOUT, drained.wait_for(|d| *d)).await;
        }
        self.publish(topics::TASK_EXIT_EVENT_TOPIC, Box::new(event))
            .await;
    }

    /// End a start: clear `starting`, return an exit that arrived meanwhile.
    async fn finish_start(
        &self,
        id: &str,
        exec_id: &str,
    ) -> Option<(TaskExit, Option<watch::Receiver<bool>>)> {
        let mut containers = self.containers.lock().await;
        let c = containers.get_mut(id)?;
        let p = if exec_id.is_empty() {
            &mut c.init
        } else {
            c.execs.get_mut(exec_id)?
        };
        p.starting = false;
        if p.status == ProcStatus::Created {
            p.status = ProcStatus::Running;
        }
        let drained = p.console.as_ref().map(|c| c.drained.clone());
        p.deferred_exit.take().map(|e| (e, drained))
    }

    /// After learning a new pid: an exit that arrived before it was recorded is applied now.
    async fn check_unclaimed(self: &Arc<Self>, pid: i32) {
        let early = self
            .unclaimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&pid);
        if let Some((code, _)) = early {
            self.claim_exit(pid, code).await;
        }
    }

    async fn zygote(&self, req: Request, fds: Vec<OwnedFd>) -> anyhow::Result<Option<i32>> {
        self.zygote.request(req, fds).await
    }

    /// The user namespace app containers of `sandbox_id` join.
    async fn pod_userns(&self, pod: &PodIdentity) -> TtrpcResult<Option<PathBuf>> {
        if pod.is_sandbox {
            return Ok(None);
        }
        let containers = self.containers.lock().await;
        let sandbox = containers.get(&pod.sandbox_id).ok_or_else(|| {
            err(
                Code::FAILED_PRECONDITION,
                format!(
                    "the sandbox {} of this pod is not managed by this shim",
                    quoted(&pod.sandbox_id)
                ),
            )
        })?;
        if sandbox.init.status == ProcStatus::Stopped || sandbox.init.pid <= 0 {
            return Err(err(
                Code::FAILED_PRECONDITION,
                format!("the sandbox {} is not running", pod.sandbox_id),
            ));
        }
        Ok(Some(PathBuf::from(format!(
            "/proc/{}/ns/user",
            sandbox.init.pid
        ))))
    }

    /// Init PIDs of the pod's running containers: the processes whose namespaces a new
    /// container of the pod may join.
    async fn pod_pids(&self, pod: &PodIdentity) -> Vec<i32> {
        if pod.is_sandbox {
            return Vec::new();
        }
        self.containers
            .lock()
            .await
            .values()
            .filter(|c| c.pod.sandbox_id == pod.sandbox_id)
            .filter(|c| c.init.pid > 0 && c.init.status != ProcStatus::Stopped)
            .map(|c| c.init.pid)
            .collect()
    }

    /// Undo whatever a failed Create did, in reverse order; errors are logged.
    async fn undo_create(&self, id: &str, bundle: &Path, record: &Record, created: bool) {
        if created {
            if let Err(e) = self
                .zygote(
                    Request::Delete {
                        id: id.to_string(),
                        root: self.root.clone(),
                        force: true,
                    },
                    vec![],
                )
                .await
            {
                tracing::warn!(container = id, error = %format!("{e:#}"), "undo: delete failed");
            }
        }
        self.cleanup_after(id, bundle, record).await;
    }

    /// Unmount the rootfs, remove the pod's cgroup parent and ID range (sandbox), remove
    /// the record.
    async fn cleanup_after(&self, id: &str, bundle: &Path, record: &Record) {
        if record.rootfs_mounted {
            if let Err(e) = self
                .zygote(
                    Request::Unmount {
                        target: bundle.join("rootfs"),
                        staging: bundle.join(state::ROOTFS_STAGING),
                    },
                    vec![],
                )
                .await
            {
                tracing::warn!(container = id, error = %format!("{e:#}"), "unmounting rootfs failed");
            }
        }
        binds::unstage(bundle);
        let undone = {
            let (id, bundle, record) = (id.to_string(), bundle.to_path_buf(), record.clone());
            // Blocking: the cgroup sweep may wait for killed processes to go.
            tokio::task::spawn_blocking(move || cleanup::undo_record(&id, &bundle, &record)).await
        };
        match undone {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(container = id, error = %format!("{e:#}"), "cleanup incomplete")
            }
            Err(e) => tracing::warn!(container = id, error = %e, "cleanup task failed"),
        }
        let _ = std::fs::remove_file(bundle.join(state::SECCOMP_FILE));
    }

    async fn create(self: &Arc<Self>, req: CreateTaskRequest) -> TtrpcResult<CreateTaskResponse> {
        let received = Instant::now();
        let id = req.id.clone();
        let bundle = PathBuf::from(&req.bundle);
        if self.containers.lock().await.contains_key(&id) {
            return Err(err(Code::ALREADY_EXISTS, format!("container {id} exists")));
        }

        // Decide: profile, spec, pod, hardening. Nothing on the machine changes yet.
        let profile_path = state::profile_path(req.options.as_ref())
            .map_err(|e| err(Code::INVALID_ARGUMENT, format!("{e:#}")))?;
        let profile = {
            let p = profile_path.clone();
            tokio::task::spawn_blocking(move || Profile::load(&p))
                .await
                .map_err(|e| internal(e.into()))?
                .map_err(|e| err(Code::INVALID_ARGUMENT, e))?
        };
        let profile = Arc::new(profile);
        let config = bundle.join("config.json");
        let original = bundle.join(state::ORIGINAL_SPEC);
        // A retried Create must harden what containerd wrote, not our own output.
        let source = if original.exists() {
            &original
        } else {
            &config
        };
        let spec =
            stockade_runtime::spec::load(source).map_err(|e| err(Code::INVALID_ARGUMENT, e))?;
        let annotations = spec.annotations().clone().unwrap_or_default();
        let pod = PodIdentity::from_annotations(&id, &annotations);
        let pod_userns = self.pod_userns(&pod).await?;
        // Recorded before the sandbox's range is taken: if the shim dies from here on,
        // `shim delete` finds enough in the bundle to give the range back.
        let mut record = Record {
            id: id.clone(),
            namespace: self.namespace.clone(),
            sandbox_id: pod.sandbox_id.clone(),
            is_sandbox: pod.is_sandbox,
            rootfs_mounted: false,
            cgroups_path: None,
            pod_cgroup: None,
            id_range: None,
            profile: profile_path.clone(),
        };
        record.save(&bundle).map_err(internal)?;
        let id_range = match podrange::range_for(&pod, &profile) {
            Ok(range) => range,
            Err(e) => {
                let _ = std::fs::remove_file(bundle.join(state::RECORD_FILE));
                return Err(err(Code::RESOURCE_EXHAUSTED, format!("{e:#}")));
            }
        };
        let ctx = HardenContext {
            container_id: id.clone(),
            sandbox_id: pod.sandbox_id.clone(),
            is_sandbox: pod.is_sandbox,
            id_range,
            pod_userns,
            pod_pids: self.pod_pids(&pod).await,
            // The shim runs in the host's network namespace.
            netns_path_is_host: stockade_runtime::namespaces::spec_netns_is_host(&spec),
            cgroup_driver: cgroups::driver(req.options.as_ref(), &spec),
        };
        let image = annotations.get(ANNOTATION_IMAGE_NAME).cloned();
        let outcome = hardener::harden(spec, &profile, &ctx);
        audit::record(
            &profile,
            AuditEvent::from_outcome(
                &id,
                &pod,
                &profile.name,
                outcome.as_ref().map(|h| &h.report),
            )
            .with_image(image.as_deref()),
        );
        let hardened = match outcome {
            Ok(h) => h,
            Err(e) => {
                if pod.is_sandbox {
                    let _ = podrange::release_range(&pod, &profile);
                }
                let _ = std::fs::remove_file(bundle.join(state::RECORD_FILE));
                let (code, message) = match &e {
                    HardenError::Refused(_) => (Code::PERMISSION_DENIED, e.to_string()),
                    HardenError::InvalidSpec(problem) => (
                        Code::INVALID_ARGUMENT,
                        format!("invalid spec {}: {problem}", source.display()),
                    ),
                };
                tracing::warn!(container = %id, pod = %pod.sandbox_id, error = %message, "refused");
                return Err(err(code, message));
            }
        };
        let mut hardened = hardened;
        // Exec processes are hardened against the spec as the hardener left it.
        let exec_base = hardened.spec.clone();
        let netns = stockade_runtime::launch::take_netns_path(&mut hardened.spec);
        let cgroups_path = hardened
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();

        // Do: every step below is undone if a later one fails.
        record.cgroups_path = Some(cgroups_path.clone());
        record.pod_cgroup = {
            let pod_dir = format!("{}/{}", profile.cgroups.parent, pod.sandbox_id);
            cgroups_path
                .starts_with(&format!("{pod_dir}/"))
                .then_some(pod_dir)
        };
        record.id_range = Some(id_range);
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let mut created = false;
        let result = async {
            record.save(&bundle)?;
            if !original.exists() {
                std::fs::copy(&config, &original)
                    .map_err(|e| anyhow::anyhow!("keeping {}: {e}", original.display()))?;
            }
            if !req.rootfs.is_empty() {
                let mounts = req
                    .rootfs
                    .iter()
                    .map(|m| RootfsMount {
                        kind: m.type_.clone(),
                        source: m.source.clone(),
                        options: m.options.clone(),
                    })
                    .collect();
                record.rootfs_mounted = true;
                record.save(&bundle)?;
                self.zygote(
                    Request::Mount {
                        mounts,
                        target: bundle.join("rootfs"),
                        staging: bundle.join(state::ROOTFS_STAGING),
                        range: id_range,
                        userns: ctx.pod_userns.clone(),
                    },
                    vec![],
                )
                .await?;
            }
            check_root_dir(&hardened.spec, &bundle)?;
            open_bundle_to(&bundle, id_range)?;
            binds::stage(&mut hardened.spec, &bundle)?;
            hardened
                .spec
                .save(&config)
                .map_err(|e| anyhow::anyhow!("writing hardened {}: {e}", config.display()))?;
            let plan = FilterPlan {
                filters: std::iter::once(hardened.seccomp.default.clone())
                    .chain(hardened.seccomp.pod.clone())
                    .collect(),
                log_denials: profile.seccomp.log_denials,
            };
            let plan_path = bundle.join(state::SECCOMP_FILE);
            std::fs::write(&plan_path, serde_json::to_vec(&plan)?)?;

            let (pid, console) = self
                .spawn_process(
                    &stdio,
                    |console_socket, mask, fds| {
                        (
                            Request::Create {
                                id: id.clone(),
                                root: self.root.clone(),
                                bundle: bundle.clone(),
                                console_socket,
                                seccomp: plan_path.clone(),
                                stdio: mask,
                                netns: netns.clone(),
                            },
                            fds,
                        )
                    },
                    &mut created,
                )
                .await?;
            anyhow::Ok((pid, console))
        }
        .await;

        let (pid, console) = match result {
            Ok(r) => r,
            Err(e) => {
                self.undo_create(&id, &bundle, &record, created).await;
                tracing::warn!(container = %id, error = %format!("{e:#}"), "create failed");
                return Err(internal(e));
            }
        };

        let mut init = Proc::new(stdio.clone());
        init.pid = pid;
        init.console = console;
        let container = Container {
            bundle: bundle.clone(),
            pod: pod.clone(),
            image,
            created_at: received,
            record,
            profile: profile.clone(),
            ctx,
            spec: exec_base,
            cgroups_path: cgroups_path.clone(),
            init,
            execs: HashMap::new(),
        };
        self.containers.lock().await.insert(id.clone(), container);
        self.check_unclaimed(pid).await;
        self.watch_oom(&id, &cgroups_path);
        tracing::info!(container = %id, pod = %pod.sandbox_id, pid, profile = %profile.name, "created");

        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(TaskCreate {
                container_id: id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                }),
                checkpoint: req.checkpoint.clone(),
                pid: u32::try_from(pid).unwrap_or(0),
                ..Default::default()
            }),
        )
        .await;
        Ok(CreateTaskResponse {
            pid: u32::try_from(pid).unwrap_or(0),
            ..Default::default()
        })
    }

    /// Open stdio (or a console socket), send the zygote request `make` builds, and for a
    /// TTY receive the pty master. `created` becomes true once the zygote succeeded.
    async fn spawn_process(
        &self,
        stdio: &StdioPaths,
        make: impl FnOnce(Option<PathBuf>, [bool; 3], Vec<OwnedFd>) -> (Request, Vec<OwnedFd>),
        created: &mut bool,
    ) -> anyhow::Result<(i32, Option<Console>)> {
        if stdio.terminal {
            let fifos = io::ConsoleIo::open(stdio).await?;
            let socket = ConsoleSocket::new()?;
            let path = socket.path.clone();
            let receive = tokio::spawn(socket.receive_master());
            let (req, fds) = make(Some(path), [false; 3], vec![]);
            let pid = match self.zygote(req, fds).await {
                Ok(pid) => pid,
                Err(e) => {
                    receive.abort();
                    return Err(e);
                }
            };
            *created = true;
            let pid = pid.ok_or_else(|| anyhow::anyhow!("the zygote returned no pid"))?;
            let master = tokio::time::timeout(Duration::from_secs(10), receive)
                .await
                .map_err(|_| anyhow::anyhow!("no pty master arrived on the console socket"))??;
            let console = Console::start(master?, fifos)?;
            Ok((pid, Some(console)))
        } else {
            let (mask, fds) = io::open_direct(stdio).await?;
            let (req, fds) = make(None, mask, fds);
            let pid = self.zygote(req, fds).await?;
            *created = true;
            let pid = pid.ok_or_else(|| anyhow::anyhow!("the zygote returned no pid"))?;
            Ok((pid, None))
        }
    }

    fn watch_oom(self: &Arc<Self>, id: &str, cgroups_path: &str) {
        match oom::watch(id.to_string(), cgroups_path) {
            Ok(mut rx) => {
                let inner = self.clone();
                tokio::spawn(async move {
                    while let Some(container_id) = rx.recv().await {
                        tracing::warn!(container = %container_id, "OOM kill");
                        inner
                            .publish(
                                topics::TASK_OOM_EVENT_TOPIC,
                                Box::new(TaskOOM {
                                    container_id,
                                    ..Default::default()
                                }),
                            )
                            .await;
                    }
                });
            }
            Err(e) => {
                tracing::warn!(container = id, error = %format!("{e:#}"), "no OOM events");
            }
        }
    }

    async fn start(self: &Arc<Self>, req: StartRequest) -> TtrpcResult<StartResponse> {
        if req.exec_id.is_empty() {
            let (pid, mut record) = {
                let mut containers = self.containers.lock().await;
                let c = containers.get_mut(&req.id).ok_or_else(|| {
                    err(Code::NOT_FOUND, format!("container {} not found", req.id))
                })?;
                if c.init.status != ProcStatus::Created {
                    return Err(err(
                        Code::FAILED_PRECONDITION,
                        "container is not in created state",
                    ));
                }
                let record = node_state::ContainerRecord::new(
                    &req.id,
                    &c.pod,
                    &c.profile.name,
                    &c.cgroups_path,
                    c.init.pid,
                    c.record.id_range,
                );
                c.init.starting = true;
                (c.init.pid, (record, c.created_at))
            };
            // Written before the workload runs, so the exporter can attribute even its
            // first denied syscalls; rewritten below with the start latency.
            if let Err(e) = node_state::write(&state::state_dir().containers(), &record.0) {
                tracing::warn!(container = %req.id, error = %e, "node state record not written");
            }
            let started = self
                .zygote(
                    Request::Start {
                        id: req.id.clone(),
                        root: self.root.clone(),
                    },
                    vec![],
                )
                .await;
            if started.is_ok() {
                wait_exec(pid).await;
            }
            let deferred = self.finish_start(&req.id, "").await;
            if let Err(e) = started {
                let _ = node_state::remove(&state::state_dir().containers(), &req.id);
                if let Some((event, drained)) = deferred {
                    self.publish_exit(event, drained).await;
                }
                return Err(internal(e));
            }
            record.0.start_latency_ms = Some(record.1.elapsed().as_secs_f64() * 1000.0);
            if let Err(e) = node_state::write(&state::state_dir().containers(), &record.0) {
                tracing::warn!(container = %req.id, error = %e, "node state record not written");
            }
            self.publish(
                topics::TASK_START_EVENT_TOPIC,
                Box::new(TaskStart {
                    container_id: req.id.clone(),
                    pid: u32::try_from(pid).unwrap_or(0),
                    ..Default::default()
                }),
            )
            .await;
            if let Some((event, drained)) = deferred {
                self.publish_exit(event, drained).await;
            }
            return Ok(StartResponse {
                pid: u32::try_from(pid).unwrap_or(0),
                ..Default::default()
            });
        }

        let (stdio, process_file, plan) = {
            let mut containers = self.containers.lock().await;
            let c = containers
                .get_mut(&req.id)
                .ok_or_else(|| err(Code::NOT_FOUND, format!("container {} not found", req.id)))?;
            let bundle = c.bundle.clone();
            let p = c
                .execs
                .get_mut(&req.exec_id)
                .ok_or_else(|| err(Code::NOT_FOUND, format!("exec {} not found", req.exec_id)))?;
            if p.status != ProcStatus::Created || p.starting {
                return Err(err(
                    Code::FAILED_PRECONDITION,
                    "exec is not in created state",
                ));
            }
            p.starting = true;
            (
                p.stdio.clone(),
                p.process_file.clone().unwrap_or_default(),
                bundle.join(state::SECCOMP_FILE),
            )
        };
        let mut created = false;
        let spawned = self
            .spawn_process(
                &stdio,
                |console_socket, mask, fds| {
                    (
                        Request::Exec {
                            id: req.id.clone(),
                            root: self.root.clone(),
                            process: process_file,
                            console_socket,
                            seccomp: plan,
                            stdio: mask,
                        },
                        fds,
                    )
                },
                &mut created,
            )
            .await;
        let (pid, console) = match spawned {
            Ok(r) => r,
            Err(e) => {
                let _ = self.finish_start(&req.id, &req.exec_id).await;
                return Err(internal(e));
            }
        };
        {
            let mut containers = self.containers.lock().await;
            if let Some(p) = containers
                .get_mut(&req.id)
                .and_then(|c| c.execs.get_mut(&req.exec_id))
            {
                p.pid = pid;
                p.console = console;
            }
        }
        wait_exec(pid).await;
        self.check_unclaimed(pid).await;
        let deferred = self.finish_start(&req.id, &req.exec_id).await;
        self.publish(
            topics::TASK_EXEC_STARTED_EVENT_TOPIC,
            Box::new(TaskExecStarted {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                pid: u32::try_from(pid).unwrap_or(0),
                ..Default::default()
            }),
        )
        .await;
        if let Some((event, drained)) = deferred {
            self.publish_exit(event, drained).await;
        }
        Ok(StartResponse {
            pid: u32::try_from(pid).unwrap_or(0),
            ..Default::default()
        })
    }

    async fn exec(self: &Arc<Self>, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        let spec_any = req
            .spec
            .as_ref()
            .ok_or_else(|| err(Code::INVALID_ARGUMENT, "exec without a process spec"))?;
        let process: OciProcess = serde_json::from_slice(&spec_any.value)
            .map_err(|e| err(Code::INVALID_ARGUMENT, format!("invalid exec process: {e}")))?;
        let mut containers = self.containers.lock().await;
        let c = containers
            .get_mut(&req.id)
            .ok_or_else(|| err(Code::NOT_FOUND, format!("container {} not found", req.id)))?;
        if c.execs.contains_key(&req.exec_id) {
            return Err(err(
                Code::ALREADY_EXISTS,
                format!("exec {} exists", req.exec_id),
            ));
        }
        if c.init.status == ProcStatus::Stopped {
            return Err(err(Code::FAILED_PRECONDITION, "container is not running"));
        }
        // The exec process gets the same hardening as the container's own process.
        let mut spec = c.spec.clone();
        spec.set_process(Some(process));
        let outcome = hardener::harden(spec, &c.profile, &c.ctx);
        audit::record(
            &c.profile,
            AuditEvent::from_outcome(
                &format!("{}/exec/{}", req.id, req.exec_id),
                &c.pod,
                &c.profile.name,
                outcome.as_ref().map(|h| &h.report),
            )
            .with_image(c.image.as_deref()),
        );
        let hardened = outcome.map_err(|e| err(Code::PERMISSION_DENIED, e))?;
        let process = hardened
            .spec
            .process()
            .clone()
            .ok_or_else(|| err(Code::INTERNAL, "hardened exec has no process"))?;
        let file = c.bundle.join(format!("exec-{}.json", req.exec_id));
        std::fs::write(
            &file,
            serde_json::to_vec(&process).map_err(|e| internal(e.into()))?,
        )
        .map_err(|e| internal(e.into()))?;
        let mut p = Proc::new(StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        });
        p.process_file = Some(file);
        c.execs.insert(req.exec_id.clone(), p);
        drop(containers);
        self.publish(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            Box::new(TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            }),
        )
        .await;
        Ok(Empty::new())
    }

    async fn kill(self: &Arc<Self>, req: KillRequest) -> TtrpcResult<Empty> {
        let (pid, status) = {
            let containers = self.containers.lock().await;
            let c = containers
                .get(&req.id)
                .ok_or_else(|| err(Code::NOT_FOUND, format!("container {} not found", req.id)))?;
            let p = c.proc(&req.exec_id)?;
            (p.pid, p.status)
        };
        let signal =
            i32::try_from(req.signal).map_err(|_| err(Code::INVALID_ARGUMENT, "bad signal"))?;
        if status == ProcStatus::Stopped && !req.all {
            return Err(err(Code::NOT_FOUND, "process already finished"));
        }
        if req.exec_id.is_empty() {
            self.zygote(
                Request::Kill {
                    id: req.id.clone(),
                    root: self.root.clone(),
                    signal,
                    all: req.all,
                },
                vec![],
            )
            .await
            .map_err(|e| {
                if status == ProcStatus::Stopped {
                    err(Code::NOT_FOUND, "process already finished")
                } else {
                    internal(e)
                }
            })?;
        } else {
            if pid <= 0 {
                return Err(err(Code::FAILED_PRECONDITION, "exec process not started"));
            }
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::try_from(signal)
                    .map_err(|e| err(Code::INVALID_ARGUMENT, e))?,
            )
            .map_err(|e| err(Code::NOT_FOUND, format!("signalling pid {pid}: {e}")))?;
        }
        Ok(Empty::new())
    }

    async fn delete(self: &Arc<Self>, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        if !req.exec_id.is_empty() {
            let mut containers = self.containers.lock().await;
            let c = containers
                .get_mut(&req.id)
                .ok_or_else(|| err(Code::NOT_FOUND, format!("container {} not found", req.id)))?;
            let p = c.proc(&req.exec_id)?;
            if p.status == ProcStatus::Running {
                return Err(err(Code::FAILED_PRECONDITION, "exec process is running"));
            }
            let p = c
                .execs
                .remove(&req.exec_id)
                .ok_or_else(|| err(Code::NOT_FOUND, "exec gone"))?;
            if let Some(f) = &p.process_file {
                remove_process_files(f);
            }
            let (code, at) = p.exited().unwrap_or((0, now()));
            return Ok(DeleteResponse {
                pid: u32::try_from(p.pid).unwrap_or(0),
                exit_status: code,
                exited_at: MessageField::some(at),
                ..Default::default()
            });
        }

        let (bundle, record, pid, running) = {
            let containers = self.containers.lock().await;
            let c = containers
                .get(&req.id)
                .ok_or_else(|| err(Code::NOT_FOUND, format!("container {} not found", req.id)))?;
            (
                c.bundle.clone(),
                c.record.clone(),
                c.init.pid,
                c.init.status != ProcStatus::Stopped && c.init.status != ProcStatus::Created,
            )
        };
        if running {
            return Err(err(
                Code::FAILED_PRECONDITION,
                format!("container {} is still running: kill it first", req.id),
            ));
        }
        self.zygote(
            Request::Delete {
                id: req.id.clone(),
                root: self.root.clone(),
                force: true,
            },
            vec![],
        )
        .await
        .map_err(internal)?;
        // A Created container's init was killed by the forced delete: wait for its exit.
        let exit_rx = {
            let containers = self.containers.lock().await;
            containers.get(&req.id).map(|c| c.init.exit.subscribe())
        };
        if let Some(mut rx) = exit_rx {
            let _ =
                tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|e| e.is_some())).await;
        }
        self.cleanup_after(&req.id, &bundle, &record).await;
        let _ = node_state::remove(&state::state_dir().containers(), &req.id);
        let c = self.containers.lock().await.remove(&req.id);
        let (code, at) = c
            .as_ref()
            .and_then(|c| c.init.exited())
            .unwrap_or((128 + 9, now()));
        if let Some(c) = c {
            for p in c.execs.values() {
                if let Some(f) = &p.process_file {
                    remove_process_files(f);
                }
            }
        }
        tracing::info!(container = %req.id, "deleted");
        self.publish(
            topics::TASK_DELETE_EVENT_TOPIC,
            Box::new(TaskDelete {
                container_id: req.id.clone(),
                pid: u32::try_from(pid).unwrap_or(0),
                exit_status: code,
                exited_at: MessageField::some(at.clone()),
                ..Default::default()
            }),
        )
        .await;
        Ok(DeleteResponse {
            pid: u32::try_from(pid).unwrap_or(0),
            exit_status: code,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
    }

    async fn state(&self, req: StateRequest) -> TtrpcResult<StateResponse> {
        let containers = self.containers.lock().await;
        let c = containers
            .get(&req.id)
            .ok_or_else(|| err(Code::NOT_FOUND, format!("container {} not found", req.id)))?;
        let p = c.proc(&req.exec_id)?;
        let exit = p.exited();
        Ok(StateResponse {
            id: if req.exec_id.is_empty() {
                req.id.clone()
            } else {
                req.exec_id.clone()
            },
            bundle: c.bundle.to_string_lossy().into_owned(),
            pid: u32::try_from(p.pid).unwrap_or(0),
            status: p.status.proto().into(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: exit.as_ref().map(|e| e.0).unwrap_or(0),
            exited_at: exit.map(|e| e.1).into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    async fn wait(&self, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let mut rx = {
            let containers = self.containers.lock().await;
            let c = containers
                .get(&req.id)
                .ok_or_else(|| err(Code::NOT_FOUND, format!("container {} not found", req.id)))?;
            c.proc(&req.exec_id)?.exit.subscribe()
        };
        let exit = rx
            .wait_for(|e| e.is_some())
            .await
            .map_err(|_| err(Code::NOT_FOUND, "process was deleted"))?
            .clone();
        let (code, at) = exit.unwrap_or((0, now()));
        Ok(WaitResponse {
            exit_status: code,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
    }

    async fn cgroups_path(&self, id: &str) -> TtrpcResult<String> {
        let containers = self.containers.lock().await;
        containers
            .get(id)
            .map(|c| c.cgroups_path.clone())
            .ok_or_else(|| err(Code::NOT_FOUND, format!("container {id} not found")))
    }

    async fn pause_resume(self: &Arc<Self>, id: &str, pause: bool) -> TtrpcResult<Empty> {
        let _ = self.cgroups_path(id).await?;
        let req = if pause {
            Request::Pause {
                id: id.to_string(),
                root: self.root.clone(),
            }
        } else {
            Request::Resume {
                id: id.to_string(),
                root: self.root.clone(),
            }
        };
        self.zygote(req, vec![]).await.map_err(internal)?;
        if let Some(c) = self.containers.lock().await.get_mut(id) {
            c.init.status = if pause {
                ProcStatus::Paused
            } else {
                ProcStatus::Running
            };
        }
        if pause {
            self.publish(
                topics::TASK_PAUSED_EVENT_TOPIC,
                Box::new(TaskPaused {
                    container_id: id.to_string(),
                    ..Default::default()
                }),
            )
            .await;
        } else {
            self.publish(
                topics::TASK_RESUMED_EVENT_TOPIC,
                Box::new(TaskResumed {
                    container_id: id.to_string(),
                    ..Default::default()
                }),
            )
            .await;
        }
        Ok(Empty::new())
    }

    async fn update(&self, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        let (cgroups_path, profile, pod, image) = {
            let containers = self.containers.lock().await;
            let c = containers
                .get(&req.id)
                .ok_or_else(|| err(Code::NOT_FOUND, format!("container {} not found", req.id)))?;
            (
                c.cgroups_path.clone(),
                c.profile.clone(),
                c.pod.clone(),
                c.image.clone(),
            )
        };
        let any = req
            .resources
            .as_ref()
            .ok_or_else(|| err(Code::INVALID_ARGUMENT, "update without resources"))?;
        let resources: LinuxResources = serde_json::from_slice(&any.value)
            .map_err(|e| err(Code::INVALID_ARGUMENT, format!("invalid resources: {e}")))?;
        let outcome = hardener::harden_resources(resources, &profile);
        audit::record(
            &profile,
            AuditEvent::from_outcome(
                &req.id,
                &pod,
                &profile.name,
                outcome.as_ref().map(|(_, r)| r),
            )
            .for_update()
            .with_image(image.as_deref()),
        );
        let (resources, report) = outcome.map_err(|e| {
            let code = match e {
                HardenError::Refused(_) => Code::PERMISSION_DENIED,
                HardenError::InvalidSpec(_) => Code::INVALID_ARGUMENT,
            };
            err(code, e)
        })?;
        for change in &report.changes {
            tracing::info!(container = %req.id, guard = change.guard, what = %change.what, "update hardened");
        }
        tokio::task::spawn_blocking(move || cgroups::apply(&cgroups_path, &resources))
            .await
            .map_err(|e| internal(e.into()))?
            .map_err(internal)?;
        Ok(Empty::new())
    }
}

#[async_trait]
impl Task for Service {
    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        self.inner.state(req).await
    }

    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        self.inner.create(req).await
    }

    async fn start(&self, _ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        self.inner.start(req).await
    }

    async fn delete(&self, _ctx: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        self.inner.delete(req).await
    }

    async fn pids(&self, _ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let path = self.inner.cgroups_path(&req.id).await?;
        let pids = tokio::task::spawn_blocking(move || cgroups::pids(&path))
            .await
            .map_err(|e| internal(e.into()))?
            .map_err(internal)?;
        Ok(PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| ProcessInfo {
                    pid: u32::try_from(pid).unwrap_or(0),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        self.inner.pause_resume(&req.id, true).await
    }

    async fn resume(&self, _ctx: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        self.inner.pause_resume(&req.id, false).await
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        self.inner.kill(req).await
    }

    async fn exec(&self, _ctx: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        self.inner.exec(req).await
    }

    async fn resize_pty(&self, _ctx: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        let containers = self.inner.containers.lock().await;
        let c = containers
            .get(&req.id)
            .ok_or_else(|| err(Code::NOT_FOUND, format!("container {} not found", req.id)))?;
        let p = c.proc(&req.exec_id)?;
        let console = p
            .console
            .as_ref()
            .ok_or_else(|| err(Code::FAILED_PRECONDITION, "the process has no terminal"))?;
        console.resize(req.width, req.height).map_err(internal)?;
        Ok(Empty::new())
    }

    async fn close_io(&self, _ctx: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        // The shim holds no writer of a process's stdin (see io.rs): containerd closing its
        // end is what the process sees; nothing to do here but check the process exists.
        let containers = self.inner.containers.lock().await;
        let c = containers
            .get(&req.id)
            .ok_or_else(|| err(Code::NOT_FOUND, format!("container {} not found", req.id)))?;
        c.proc(&req.exec_id)?;
        Ok(Empty::new())
    }

    async fn update(&self, _ctx: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        self.inner.update(req).await
    }

    async fn wait(&self, _ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        self.inner.wait(req).await
    }

    async fn stats(&self, _ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let path = self.inner.cgroups_path(&req.id).await?;
        let stats = tokio::task::spawn_blocking(move || stats::collect(&path))
            .await
            .map_err(|e| internal(e.into()))?
            .map_err(internal)?;
        Ok(StatsResponse {
            stats: MessageField::some(stats),
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: ConnectRequest,
    ) -> TtrpcResult<ConnectResponse> {
        let containers = self.inner.containers.lock().await;
        let task_pid = containers.get(&req.id).map(|c| c.init.pid).unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: u32::try_from(task_pid).unwrap_or(0),
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _ctx: &TtrpcContext, _req: ShutdownRequest) -> TtrpcResult<Empty> {
        if self.inner.containers.lock().await.is_empty() {
            tracing::info!("no containers left: shutting down");
            self.inner.shutdown.notify_one();
        }
        Ok(Empty::new())
    }
}
