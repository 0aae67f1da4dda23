//! Starting a process through the launcher with its stdio: fifos handed over directly, or
//! a console socket that receives a TTY's pty master.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::anyhow;

use super::TaskService;
use crate::io::{self, Console, ConsoleIo, ConsoleSocket, StdioPaths};
use crate::launcher::{Request, StdioMask};

/// How long libcontainer may take to send a TTY's pty master.
const PTY_MASTER_TIMEOUT: Duration = Duration::from_secs(10);

/// A launched process.
pub struct Spawned {
    pub pid: i32,
    pub console: Option<Console>,
}

/// How far a spawn got when it failed: whether the launcher made the process.
pub struct SpawnError {
    pub launched: bool,
    pub error: anyhow::Error,
}

impl SpawnError {
    fn before_launch(error: anyhow::Error) -> SpawnError {
        SpawnError {
            launched: false,
            error,
        }
    }

    fn after_launch(error: anyhow::Error) -> SpawnError {
        SpawnError {
            launched: true,
            error,
        }
    }
}

impl TaskService {
    /// Open stdio (or a console socket), send the request `make` builds from them, and for
    /// a TTY receive the pty master.
    pub(super) async fn spawn_process(
        &self,
        stdio: &StdioPaths,
        make: impl FnOnce(Option<PathBuf>, StdioMask) -> Request,
    ) -> Result<Spawned, SpawnError> {
        let launcher = &self.inner.launcher;
        if !stdio.terminal {
            let (mask, fds) = io::open_direct(stdio)
                .await
                .map_err(SpawnError::before_launch)?;
            let pid = launcher
                .call(make(None, mask), fds)
                .await
                .map_err(SpawnError::before_launch)?;
            let pid = pid.ok_or_else(|| SpawnError::after_launch(anyhow!("no pid returned")))?;
            return Ok(Spawned { pid, console: None });
        }
        let fifos = ConsoleIo::open(stdio)
            .await
            .map_err(SpawnError::before_launch)?;
        let socket = ConsoleSocket::new(&self.inner.config.state.console())
            .map_err(SpawnError::before_launch)?;
        let path = socket.path.clone();
        let receive = tokio::spawn(socket.receive_master());
        let no_fds: Vec<OwnedFd> = Vec::new();
        let pid = match launcher.call(make(Some(path), [false; 3]), no_fds).await {
            Ok(pid) => pid,
            Err(e) => {
                receive.abort();
                return Err(SpawnError::before_launch(e));
            }
        };
        let pid = pid.ok_or_else(|| SpawnError::after_launch(anyhow!("no pid returned")))?;
        let master = tokio::time::timeout(PTY_MASTER_TIMEOUT, receive)
            .await
            .map_err(|_| {
                SpawnError::after_launch(anyhow!("no pty master arrived on the console socket"))
            })?
            .map_err(|e| SpawnError::after_launch(e.into()))?
            .map_err(SpawnError::after_launch)?;
        let console = Console::start(master, fifos).map_err(SpawnError::after_launch)?;
        Ok(Spawned {
            pid,
            console: Some(console),
        })
    }
}
