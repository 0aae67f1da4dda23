//! The Task service of the null runtime: containers are a mounted rootfs and a process;
//! exec processes run in the same rootfs. Everything runs on the shim's single runtime
//! thread (see process::fork_held).

use std::collections::HashMap;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim_protos::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, DeleteResponse, Empty, ExecProcessRequest, KillRequest, PidsRequest,
    PidsResponse, ProcessInfo, ShutdownRequest, StartRequest, StartResponse, StateRequest,
    StateResponse, StatsRequest, StatsResponse, Status, UpdateTaskRequest, WaitRequest,
    WaitResponse,
};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{MessageDyn, MessageField};
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::topics;
use containerd_shim_protos::ttrpc::context::Context;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use containerd_shim_protos::ttrpc::{self, Code};
use tokio::sync::{watch, Mutex, Notify};

use crate::process::{self, Held, Launch};
use crate::spec;

type TtrpcResult<T> = ttrpc::Result<T>;
type Exit = Option<(u32, Timestamp)>;

fn err(code: Code, msg: impl std::fmt::Display) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg))
}

fn internal(e: anyhow::Error) -> ttrpc::Error {
    err(Code::INTERNAL, format!("{e:#}"))
}

fn not_found(id: &str) -> ttrpc::Error {
    err(Code::NOT_FOUND, format!("container {id} not found"))
}

pub fn now() -> Timestamp {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Created,
    Running,
    Stopped,
}

struct Proc {
    pid: i32,
    held: Option<Held>,
    state: State,
    exit: watch::Sender<Exit>,
    stdin: String,
    stdout: String,
    stderr: String,
}

impl Proc {
    fn exited(&self) -> Exit {
        self.exit.borrow().clone()
    }
}

struct Container {
    bundle: PathBuf,
    rootfs: PathBuf,
    mounted: bool,
    init: Proc,
    execs: HashMap<String, Proc>,
}

impl Container {
    fn proc_mut(&mut self, exec_id: &str) -> TtrpcResult<&mut Proc> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        self.execs
            .get_mut(exec_id)
            .ok_or_else(|| err(Code::NOT_FOUND, format!("exec {exec_id} not found")))
    }
}

pub struct Inner {
    namespace: String,
    publisher: RemotePublisher,
    containers: Mutex<HashMap<String, Container>>,
    pub shutdown: Notify,
}

#[derive(Clone)]
pub struct Service {
    pub inner: Arc<Inner>,
}

impl Service {
    pub fn new(namespace: &str, publisher: RemotePublisher) -> Service {
        Service {
            inner: Arc::new(Inner {
                namespace: namespace.to_string(),
                publisher,
                containers: Mutex::new(HashMap::new()),
                shutdown: Notify::new(),
            }),
        }
    }
}

/// A process whose command has not run yet, in state Created.
async fn created_proc(
    launch: &Launch,
    stdin: &str,
    stdout: &str,
    stderr: &str,
) -> anyhow::Result<Proc> {
    let stdio = process::open_stdio(stdin, stdout, stderr).await?;
    let held = process::fork_held(
        launch,
        [
            stdio[0].as_raw_fd(),
            stdio[1].as_raw_fd(),
            stdio[2].as_raw_fd(),
        ],
    )?;
    Ok(Proc {
        pid: held.pid,
        held: Some(held),
        state: State::Created,
        exit: watch::channel(None).0,
        stdin: stdin.to_string(),
        stdout: stdout.to_string(),
        stderr: stderr.to_string(),
    })
}

impl Inner {
    async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        // Best effort: a lost event shows up as a hung CRI call in the bench.
        let _ = self
            .publisher
            .publish(Context::default(), topic, &self.namespace, event)
            .await;
    }

    /// Pids the reaper should wait for.
    pub async fn live_pids(&self) -> Vec<i32> {
        let containers = self.containers.lock().await;
        containers
            .values()
            .flat_map(|c| std::iter::once(&c.init).chain(c.execs.values()))
            .filter(|p| p.state != State::Stopped)
            .map(|p| p.pid)
            .collect()
    }

    /// A process that died between its fork and being recorded (its SIGCHLD may have
    /// come before the reaper knew it): collect it now.
    async fn check_exited(&self, pid: i32) {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        let code = match waitpid(nix::unistd::Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => code as u32,
            Ok(WaitStatus::Signaled(_, sig, _)) => 128 + sig as u32,
            _ => return,
        };
        self.on_exit(pid, code).await;
    }

    pub async fn on_exit(&self, pid: i32, code: u32) {
        let mut containers = self.containers.lock().await;
        for (cid, c) in containers.iter_mut() {
            if c.init.pid == pid && c.init.state != State::Stopped {
                // The container's init is gone: so is the container, as when a PID
                // namespace ends (background children and exec processes would outlive
                // it here).
                let _ = process::signal_group(pid, libc::SIGKILL);
                for e in c.execs.values().filter(|e| e.state != State::Stopped) {
                    let _ = process::signal_group(e.pid, libc::SIGKILL);
                }
            }
            let procs = std::iter::once((cid.clone(), &mut c.init))
                .chain(c.execs.iter_mut().map(|(eid, p)| (eid.clone(), p)));
            for (id, p) in procs {
                if p.pid != pid || p.state == State::Stopped {
                    continue;
                }
                let at = now();
                p.state = State::Stopped;
                p.held = None;
                p.exit.send_replace(Some((code, at.clone())));
                let event = TaskExit {
                    container_id: cid.clone(),
                    id,
                    pid: pid as u32,
                    exit_status: code,
                    exited_at: MessageField::some(at),
                    ..Default::default()
                };
                // Under the lock: a Start's TaskStart is always published first.
                self.publish(topics::TASK_EXIT_EVENT_TOPIC, Box::new(event))
                    .await;
                return;
            }
        }
    }

    async fn create(&self, req: CreateTaskRequest) -> TtrpcResult<CreateTaskResponse> {
        let id = req.id.clone();
        if self.containers.lock().await.contains_key(&id) {
            return Err(err(Code::ALREADY_EXISTS, format!("container {id} exists")));
        }
        if req.terminal {
            return Err(err(
                Code::INVALID_ARGUMENT,
                "the null runtime has no terminal support",
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        let spec = spec::load(&bundle.join("config.json"))
            .map_err(|e| err(Code::INVALID_ARGUMENT, format!("{e:#}")))?;
        let Some(proc_spec) = spec.process.clone() else {
            return Err(err(
                Code::INVALID_ARGUMENT,
                format!("{}/config.json has no process", bundle.display()),
            ));
        };
        let rootfs = spec.rootfs(&bundle);
        let mounted = !req.rootfs.is_empty();
        if mounted {
            process::mount_rootfs(&req.rootfs, &rootfs).map_err(internal)?;
        }
        let made = async {
            let launch = Launch::new(&proc_spec, &rootfs)?;
            created_proc(&launch, &req.stdin, &req.stdout, &req.stderr).await
        }
        .await;
        let init = match made {
            Ok(p) => p,
            Err(e) => {
                if mounted {
                    process::unmount_rootfs(&rootfs);
                }
                return Err(internal(e));
            }
        };
        let pid = init.pid;
        self.containers.lock().await.insert(
            id.clone(),
            Container {
                bundle,
                rootfs,
                mounted,
                init,
                execs: HashMap::new(),
            },
        );
        self.check_exited(pid).await;
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(TaskCreate {
                container_id: id,
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                }),
                pid: pid as u32,
                ..Default::default()
            }),
        )
        .await;
        Ok(CreateTaskResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn start(&self, req: StartRequest) -> TtrpcResult<StartResponse> {
        let mut containers = self.containers.lock().await;
        let c = containers
            .get_mut(&req.id)
            .ok_or_else(|| not_found(&req.id))?;
        let p = c.proc_mut(&req.exec_id)?;
        let Some(held) = p.held.take().filter(|_| p.state == State::Created) else {
            return Err(err(
                Code::FAILED_PRECONDITION,
                "process is not in created state",
            ));
        };
        let pid = p.pid;
        // On this (the only) runtime thread: exec takes about a millisecond.
        held.release().map_err(internal)?;
        p.state = State::Running;
        let event: Box<dyn MessageDyn> = if req.exec_id.is_empty() {
            Box::new(TaskStart {
                container_id: req.id.clone(),
                pid: pid as u32,
                ..Default::default()
            })
        } else {
            Box::new(TaskExecStarted {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                pid: pid as u32,
                ..Default::default()
            })
        };
        let topic = if req.exec_id.is_empty() {
            topics::TASK_START_EVENT_TOPIC
        } else {
            topics::TASK_EXEC_STARTED_EVENT_TOPIC
        };
        self.publish(topic, event).await;
        Ok(StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn exec(&self, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        if req.terminal {
            return Err(err(
                Code::INVALID_ARGUMENT,
                "the null runtime has no terminal support",
            ));
        }
        let proc_spec: spec::Process = req
            .spec
            .as_ref()
            .map(|any| serde_json::from_slice(&any.value))
            .transpose()
            .map_err(|e| err(Code::INVALID_ARGUMENT, format!("exec process spec: {e}")))?
            .ok_or_else(|| err(Code::INVALID_ARGUMENT, "exec without a process spec"))?;
        let rootfs = {
            let containers = self.containers.lock().await;
            let c = containers.get(&req.id).ok_or_else(|| not_found(&req.id))?;
            if c.execs.contains_key(&req.exec_id) {
                return Err(err(
                    Code::ALREADY_EXISTS,
                    format!("exec {} exists", req.exec_id),
                ));
            }
            c.rootfs.clone()
        };
        let launch = Launch::new(&proc_spec, &rootfs).map_err(internal)?;
        let p = created_proc(&launch, &req.stdin, &req.stdout, &req.stderr)
            .await
            .map_err(internal)?;
        let mut containers = self.containers.lock().await;
        let c = containers
            .get_mut(&req.id)
            .ok_or_else(|| not_found(&req.id))?;
        let pid = p.pid;
        c.execs.insert(req.exec_id.clone(), p);
        drop(containers);
        self.check_exited(pid).await;
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

    async fn kill(&self, req: KillRequest) -> TtrpcResult<Empty> {
        let mut containers = self.containers.lock().await;
        let c = containers
            .get_mut(&req.id)
            .ok_or_else(|| not_found(&req.id))?;
        let target = c.proc_mut(&req.exec_id)?;
        let mut pids = vec![(target.pid, target.state)];
        if req.all && req.exec_id.is_empty() {
            pids.extend(c.execs.values().map(|p| (p.pid, p.state)));
        }
        let signal = i32::try_from(req.signal)
            .map_err(|_| err(Code::INVALID_ARGUMENT, "signal out of range"))?;
        for (pid, _) in pids.into_iter().filter(|(_, s)| *s != State::Stopped) {
            // The pid is a child of ours not yet recorded as exited (the reaper records
            // an exit on this same thread right after collecting it).
            process::signal_group(pid, signal)
                .map_err(|e| internal(anyhow::anyhow!("kill {pid} {signal}: {e}")))?;
        }
        Ok(Empty::new())
    }

    async fn delete(&self, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        let mut rx = {
            let mut containers = self.containers.lock().await;
            let c = containers
                .get_mut(&req.id)
                .ok_or_else(|| not_found(&req.id))?;
            let p = c.proc_mut(&req.exec_id)?;
            match p.state {
                State::Running => {
                    return Err(err(
                        Code::FAILED_PRECONDITION,
                        "process is still running: kill it first",
                    ))
                }
                State::Created => {
                    let _ = process::signal_group(p.pid, libc::SIGKILL);
                }
                State::Stopped => {}
            }
            p.exit.subscribe()
        };
        // A Created process was just killed: its exit comes through the reaper.
        let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|e| e.is_some())).await;
        let mut containers = self.containers.lock().await;
        let (pid, exit) = if req.exec_id.is_empty() {
            let c = containers
                .remove(&req.id)
                .ok_or_else(|| not_found(&req.id))?;
            if c.mounted {
                process::unmount_rootfs(&c.rootfs);
            }
            (c.init.pid, c.init.exited())
        } else {
            let c = containers
                .get_mut(&req.id)
                .ok_or_else(|| not_found(&req.id))?;
            let p = c
                .execs
                .remove(&req.exec_id)
                .ok_or_else(|| err(Code::NOT_FOUND, "exec gone"))?;
            (p.pid, p.exited())
        };
        let (code, at) = exit.unwrap_or((128 + libc::SIGKILL as u32, now()));
        if req.exec_id.is_empty() {
            self.publish(
                topics::TASK_DELETE_EVENT_TOPIC,
                Box::new(TaskDelete {
                    container_id: req.id.clone(),
                    pid: pid as u32,
                    exit_status: code,
                    exited_at: MessageField::some(at.clone()),
                    ..Default::default()
                }),
            )
            .await;
        }
        Ok(DeleteResponse {
            pid: pid as u32,
            exit_status: code,
            exited_at: MessageField::some(at),
            ..Default::default()
        })
    }

    async fn state(&self, req: StateRequest) -> TtrpcResult<StateResponse> {
        let mut containers = self.containers.lock().await;
        let c = containers
            .get_mut(&req.id)
            .ok_or_else(|| not_found(&req.id))?;
        let bundle = c.bundle.to_string_lossy().into_owned();
        let p = c.proc_mut(&req.exec_id)?;
        let exit = p.exited();
        let status = match p.state {
            State::Created => Status::CREATED,
            State::Running => Status::RUNNING,
            State::Stopped => Status::STOPPED,
        };
        Ok(StateResponse {
            id: if req.exec_id.is_empty() {
                req.id.clone()
            } else {
                req.exec_id.clone()
            },
            bundle,
            pid: p.pid as u32,
            status: status.into(),
            stdin: p.stdin.clone(),
            stdout: p.stdout.clone(),
            stderr: p.stderr.clone(),
            exit_status: exit.as_ref().map(|e| e.0).unwrap_or(0),
            exited_at: exit.map(|e| e.1).into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    async fn wait(&self, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let mut rx = {
            let mut containers = self.containers.lock().await;
            let c = containers
                .get_mut(&req.id)
                .ok_or_else(|| not_found(&req.id))?;
            c.proc_mut(&req.exec_id)?.exit.subscribe()
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
}

#[async_trait]
impl Task for Service {
    async fn state(&self, _: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        self.inner.state(req).await
    }

    async fn create(
        &self,
        _: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        self.inner.create(req).await
    }

    async fn start(&self, _: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        self.inner.start(req).await
    }

    async fn delete(&self, _: &TtrpcContext, req: DeleteRequest) -> TtrpcResult<DeleteResponse> {
        self.inner.delete(req).await
    }

    async fn pids(&self, _: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let containers = self.inner.containers.lock().await;
        let c = containers.get(&req.id).ok_or_else(|| not_found(&req.id))?;
        let processes = std::iter::once(&c.init)
            .chain(c.execs.values())
            .filter(|p| p.state != State::Stopped)
            .map(|p| ProcessInfo {
                pid: p.pid as u32,
                ..Default::default()
            })
            .collect();
        Ok(PidsResponse {
            processes,
            ..Default::default()
        })
    }

    async fn kill(&self, _: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        self.inner.kill(req).await
    }

    async fn exec(&self, _: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        self.inner.exec(req).await
    }

    async fn close_io(&self, _: &TtrpcContext, _req: CloseIORequest) -> TtrpcResult<Empty> {
        // The shim holds no end of any stdin: nothing to close.
        Ok(Empty::new())
    }

    async fn update(&self, _: &TtrpcContext, _req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        // No cgroups: there is nothing to update.
        Ok(Empty::new())
    }

    async fn wait(&self, _: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        self.inner.wait(req).await
    }

    async fn stats(&self, _: &TtrpcContext, _req: StatsRequest) -> TtrpcResult<StatsResponse> {
        Ok(StatsResponse::default())
    }

    async fn connect(&self, _: &TtrpcContext, req: ConnectRequest) -> TtrpcResult<ConnectResponse> {
        let containers = self.inner.containers.lock().await;
        let task_pid = containers.get(&req.id).map(|c| c.init.pid).unwrap_or(0);
        Ok(ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: task_pid as u32,
            version: env!("CARGO_PKG_VERSION").to_string(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, _: &TtrpcContext, _req: ShutdownRequest) -> TtrpcResult<Empty> {
        if self.inner.containers.lock().await.is_empty() {
            self.inner.shutdown.notify_one();
        }
        Ok(Empty::new())
    }
}
