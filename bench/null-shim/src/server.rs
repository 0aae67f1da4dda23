//! The shim server: serves the Task API (as task v2 for containerd 1.x and v3 for 2.x)
//! on one runtime thread and reaps the container processes on SIGCHLD.

use std::os::fd::AsRawFd;
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
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};

use crate::task::{Inner, Service};

const TASK_V3: &str = "containerd.task.v3.Task";
const TASK_V2: &str = "containerd.task.v2.Task";

pub fn run(flags: &Flags) -> anyhow::Result<()> {
    if flags.socket.is_empty() {
        bail!("the shim server needs -socket");
    }
    // Own session: containerd's signals do not reach the shim.
    let _ = nix::unistd::setsid();
    let path = flags.socket.trim_start_matches("unix://").to_string();
    let Some(listener) = bind(Path::new(&path))? else {
        // Another start of the same pod won the race: that server serves.
        return Ok(());
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let result = runtime.block_on(serve(flags, &path, listener));
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

async fn serve(flags: &Flags, path: &str, listener: UnixListener) -> anyhow::Result<()> {
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").context("TTRPC_ADDRESS is not set")?;
    let publisher = RemotePublisher::new(&ttrpc_address)
        .await
        .map_err(|e| anyhow::anyhow!("connecting to containerd at {ttrpc_address}: {e}"))?;
    let service = Service::new(&flags.namespace, publisher);
    let task: Arc<dyn Task + Send + Sync> = Arc::new(service.clone());
    let v3 = create_task(task.clone());
    let v2 = create_task(task)
        .into_iter()
        .map(|(name, svc)| {
            let name = if name == TASK_V3 {
                TASK_V2.to_string()
            } else {
                name
            };
            (name, svc)
        })
        .collect();
    tokio::spawn(reap(service.inner.clone()));
    let listener = Listener::try_from(listener).context("ttrpc listener")?;
    let mut server = Server::new()
        .add_listener(listener)
        .register_service(v3)
        .register_service(v2);
    server
        .start()
        .await
        .map_err(|e| anyhow::anyhow!("starting the ttrpc server: {e}"))?;
    // `shim start` reads our stdout until EOF to know we serve.
    let devnull = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .context("opening /dev/null")?;
    nix::unistd::dup2(devnull.as_raw_fd(), 1).context("redirecting stdout")?;

    service.inner.shutdown.notified().await;
    let _ = server.shutdown().await;
    let _ = std::fs::remove_file(path);
    Ok(())
}

/// On every SIGCHLD, collect the exits of the processes we track (only those: a helper
/// that a library forks and waits for itself keeps its status).
async fn reap(inner: Arc<Inner>) {
    let Ok(mut sigchld) = signal(SignalKind::child()) else {
        return;
    };
    let _term = signal(SignalKind::terminate());
    let _int = signal(SignalKind::interrupt());
    loop {
        for pid in inner.live_pids().await {
            let code = match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(_, code)) => code as u32,
                Ok(WaitStatus::Signaled(_, sig, _)) => 128 + sig as u32,
                _ => continue,
            };
            inner.on_exit(pid, code).await;
        }
        if sigchld.recv().await.is_none() {
            return;
        }
    }
}
