//! A pod's shim server found dead by `shim delete`: its socket is still there, no server
//! process runs for it, and what it started may still run its binary.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::host::is_alive;

/// The pod's shim server, found dead: the socket its bundle's `address` file names
/// (written by `start`) is there, and no server process runs for it any more.
pub struct DeadServer {
    /// The address as the server got it (`-socket`).
    address: String,
    socket: PathBuf,
}

/// A process whose command line carries `-socket <address>`: the server, its zygote, or a
/// container process it started that has not exec'd its workload yet.
struct SocketProcess {
    pid: i32,
    /// The server made its own session (setsid) in the host's user namespace; a container's
    /// init makes one too, but in the pod's user namespace.
    server_like: bool,
    zombie: bool,
    /// Runs this very binary (a workload cannot fake its exe, only its command line).
    our_exe: bool,
}

fn processes_with_socket(address: &str) -> Vec<SocketProcess> {
    use std::os::unix::fs::MetadataExt;
    let identity = |path: &Path| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let own_exe = identity(Path::new("/proc/self/exe"));
    let own_userns = identity(Path::new("/proc/self/ns/user"));
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for process in all.flatten() {
        // Empty once a process is exiting (its memory is gone before its files are).
        let args = process.cmdline().unwrap_or_default();
        if !args
            .windows(2)
            .any(|w| w[0] == "-socket" && w[1] == address)
        {
            continue;
        }
        let Ok(stat) = process.stat() else {
            continue;
        };
        let dir = PathBuf::from(format!("/proc/{}", process.pid()));
        found.push(SocketProcess {
            pid: process.pid(),
            server_like: stat.session == process.pid()
                && own_userns.is_some()
                && identity(&dir.join("ns/user")) == own_userns,
            zombie: matches!(stat.state, 'Z' | 'X'),
            our_exe: own_exe.is_some() && identity(&dir.join("exe")) == own_exe,
        });
    }
    found
}

impl DeadServer {
    pub fn find(bundle: &Path) -> Option<DeadServer> {
        use std::os::unix::fs::FileTypeExt;
        let address = std::fs::read_to_string(bundle.join("address")).ok()?;
        let address = address.trim().to_string();
        let socket = PathBuf::from(address.trim_start_matches("unix://"));
        if !std::fs::symlink_metadata(&socket).is_ok_and(|m| m.file_type().is_socket()) {
            return None;
        }
        // Whether the socket accepts connections says little: a SIGKILLed server's
        // listener can linger for a moment while the kernel tears the process down.
        let server = processes_with_socket(&address)
            .into_iter()
            .find(|p| p.server_like && !p.zombie);
        match server {
            Some(p) => {
                tracing::debug!(socket = %socket.display(), pid = p.pid, "the shim server still runs");
                None
            }
            None => Some(DeadServer { address, socket }),
        }
    }

    /// SIGKILL what the dead server left that never became a workload: youki's
    /// intermediate and init processes not yet exec'd still run this binary with the
    /// server's `-socket`. Orphaned, they would go on (an intermediate process makes the
    /// container's cgroups) after this cleanup. Waits (bounded) for them to die.
    pub fn kill_orphans(&self) {
        let me = std::process::id();
        let mut killed = Vec::new();
        for p in processes_with_socket(&self.address) {
            if !p.our_exe || p.zombie || u32::try_from(p.pid).is_ok_and(|pid| pid == me) {
                continue;
            }
            tracing::info!(pid = p.pid, socket = %self.address, "killing a process the dead shim left");
            if kill(Pid::from_raw(p.pid), Signal::SIGKILL).is_ok() {
                killed.push(p.pid);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while killed.iter().any(|&pid| is_alive(pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Remove the socket the SIGKILLed server could not.
    pub fn remove_socket(&self) {
        match std::fs::remove_file(&self.socket) {
            Ok(()) => {
                tracing::info!(socket = %self.socket.display(), "removed the dead shim's socket")
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(socket = %self.socket.display(), error = %e, "removing the dead shim's socket")
            }
        }
    }
}
