//! The shim server: one process per pod. Forks the zygote while still single-threaded,
//! then serves the Task API over ttrpc and reaps every child (init and exec processes are
//! the zygote's siblings, i.e. our children; so are later zygotes, see launcher::handle).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::Flags;
use containerd_shim_protos::shim_async::{create_task, Task};
use containerd_shim_protos::ttrpc::r#async::transport::Listener;
use containerd_shim_protos::ttrpc::r#async::Server;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use stockade_runtime::state_dir::StateDir;
use tokio::signal::unix::{signal, SignalKind};

use crate::host::RealHost;
use crate::launcher::handle::Zygote;
use crate::task::events::RemoteEvents;
use crate::task::{ShimConfig, TaskService};

const TASK_V3: &str = "containerd.task.v3.Task";
/// containerd 1.x speaks task API v2; v3 is a renamed copy of it, so the same handlers
/// serve both names.
const TASK_V2: &str = "containerd.task.v2.Task";

pub fn run(flags: &Flags, state: StateDir) -> anyhow::Result<()> {
    if flags.socket.is_empty() {
        bail!("the shim server needs -socket");
    }
    // Own session: signals to containerd's process group must not reach the shim, and
    // containers keep running when containerd restarts.
    let _ = nix::unistd::setsid();
    crate::memory::limit_arenas();
    crate::logging::init_server(flags.debug);

    // containerd-shim's spawn() reads our stdout until EOF to know we are serving: keep it
    // on a close-on-exec fd (closed once the socket listens) and point fd 1 at /dev/null so
    // neither the zygote nor containers inherit it.
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) on fd 1 returns a new fd or -1, checked below.
    let ready = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
    if ready < 0 {
        return Err(std::io::Error::last_os_error()).context("duplicating stdout");
    }
    // SAFETY: `ready` is a fresh fd we own.
    let ready = unsafe { OwnedFd::from_raw_fd(ready) };
    let devnull = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    nix::unistd::dup2(devnull.as_raw_fd(), 1).context("redirecting stdout")?;

    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) } != 0 {
        return Err(std::io::Error::last_os_error()).context("becoming a subreaper");
    }

    let path = flags.socket.trim_start_matches("unix://").to_string();
    let Some(listener) = bind(Path::new(&path))? else {
        tracing::info!(socket = %path, "the pod's shim is already running");
        return Ok(());
    };
    // Inherited by the zygote, which needs it for every container too.
    crate::cgroups::detect();
    let args = std::env::args_os().skip(1).collect();
    let zygote = Zygote::fork(&[ready.as_raw_fd(), listener.as_raw_fd()], args)?;
    // After the fork (the window writes from a thread of its own, and the zygote must be
    // forked from a single-threaded process): a new server means a new pod, whose first
    // cgroup move is coming; its grace period starts now (TaskService::hold_start_window).
    let start_window = crate::cgroups::open_attach_window();
    // One thread serves everything (a pod's Task calls come one at a time, and what
    // blocks goes to the blocking pool): every thread costs each pod's shim its stack.
    // Blocking threads go once idle for a second, for the same reason.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_keep_alive(std::time::Duration::from_secs(1))
        .build()
        .context("tokio runtime")?;
    let result = runtime.block_on(serve(
        flags,
        state,
        &path,
        listener,
        zygote,
        ready,
        start_window,
    ));
    // Blocking threads may still wait on a fifo nobody opens; don't wait for them.
    runtime.shutdown_timeout(std::time::Duration::from_millis(100));
    result
}

fn bind(path: &Path) -> anyhow::Result<Option<UnixListener>> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match UnixListener::bind(path) {
        Ok(l) => Ok(Some(l)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                // The pod's shim already serves this socket.
                return Ok(None);
            }
            std::fs::remove_file(path)
                .with_context(|| format!("removing stale {}", path.display()))?;
            Ok(Some(
                UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?,
            ))
        }
        Err(e) => Err(e).with_context(|| format!("binding {}", path.display())),
    }
}

async fn serve(
    flags: &Flags,
    state: StateDir,
    path: &str,
    listener: UnixListener,
    zygote: Zygote,
    ready: OwnedFd,
    start_window: stockade_cgroups::AttachWindow,
) -> anyhow::Result<()> {
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").context("TTRPC_ADDRESS is not set")?;
    let publisher = RemotePublisher::new(&ttrpc_address)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to containerd at {ttrpc_address}: {e}"))?;
    let config = ShimConfig {
        namespace: flags.namespace.clone(),
        state: state.clone(),
    };
    let zygote = Arc::new(zygote);
    tokio::spawn(zygote.clone().retire_when_idle());
    let service = TaskService::new(
        config,
        zygote,
        Arc::new(RealHost::new(state)),
        Arc::new(RemoteEvents::new(publisher, &flags.namespace)),
    );
    service.warm_up();
    service.hold_start_window(start_window);
    let task: Arc<dyn Task + Send + Sync> = Arc::new(service.clone());
    let v3 = create_task(task.clone());
    let v2 = create_task(task)
        .into_iter()
        .map(|(name, svc)| {
            (
                if name == TASK_V3 {
                    TASK_V2.to_string()
                } else {
                    name
                },
                svc,
            )
        })
        .collect();

    tokio::spawn(reap(service.clone()));

    let listener = Listener::try_from(listener).context("ttrpc listener")?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(v3)
        .register_service(v2);
    server
        .start()
        .await
        .map_err(|e| anyhow::anyhow!("starting the ttrpc server: {e}"))?;
    drop(ready);
    tracing::info!(socket = %path, pid = std::process::id(), "shim serving");

    service.shut_down().await;
    // The socket goes before the connections: containerd runs `shim delete` as soon as its
    // connection closes, and a socket still there sends that looking through every
    // process of the node for a dead server (dead_server.rs).
    let _ = std::fs::remove_file(path);
    let _ = server.shutdown().await;
    tracing::info!("shim exiting");
    Ok(())
}

/// Reap every exited child on SIGCHLD and report each exit exactly once.
async fn reap(service: TaskService) {
    let mut sigchld = match signal(SignalKind::child()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "no SIGCHLD handler: exits will not be reported");
            return;
        }
    };
    // Ignore SIGTERM/SIGINT: containerd stops the shim through Shutdown.
    let _term = signal(SignalKind::terminate());
    let _int = signal(SignalKind::interrupt());
    loop {
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => service.on_exit(pid.as_raw(), code).await,
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    service.on_exit(pid.as_raw(), 128 + sig as i32).await
                }
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => break,
                Ok(_) => continue,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "waitpid");
                    break;
                }
            }
        }
        if sigchld.recv().await.is_none() {
            return;
        }
    }
}
