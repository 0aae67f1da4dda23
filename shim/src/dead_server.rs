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
    zombie: bool,
    /// Runs this very binary (a workload cannot fake its exe, only its command line).
    our_exe: bool,
}

fn processes_with_socket(address: &str) -> Vec<SocketProcess> {
    use std::os::unix::fs::MetadataExt;
    let identity = |path: &Path| std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    let own_exe = identity(Path::new("/proc/self/exe"));
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
            zombie: matches!(stat.state, 'Z' | 'X'),
            our_exe: own_exe.is_some() && identity(&dir.join("exe")) == own_exe,
        });
    }
    found
}

/// The process that listens on `socket` (SO_PEERCRED of a connection to it), if it
/// accepts connections.
fn listener_pid(socket: &Path) -> Option<i32> {
    let stream = std::os::unix::net::UnixStream::connect(socket).ok()?;
    let cred =
        nix::sys::socket::getsockopt(&stream, nix::sys::socket::sockopt::PeerCredentials).ok()?;
    Some(cred.pid())
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
        // That the socket accepts connections says little: a SIGKILLed server's listener
        // can linger for a moment while the kernel tears the process down. Whether the
        // process listening on it (the kernel names it) still runs says it all, without
        // looking through every process of the node: containerd runs `shim delete` for
        // every container of a pod whose shim goes on serving the others.
        match listener_pid(&socket) {
            Some(pid) if is_alive(pid) => {
                tracing::debug!(socket = %socket.display(), pid, "the shim server still runs");
                None
            }
            _ => Some(DeadServer { address, socket }),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_listener_of_a_socket_is_named_by_the_kernel_and_gone_with_it() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s");
        let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
        assert_eq!(
            listener_pid(&socket),
            Some(std::process::id() as i32),
            "this process listens"
        );
        drop(listener);
        // The socket file stays, as a killed server leaves it: nobody listens.
        assert!(socket.exists());
        assert_eq!(listener_pid(&socket), None);
        assert_eq!(listener_pid(&dir.path().join("missing")), None);
    }
}
