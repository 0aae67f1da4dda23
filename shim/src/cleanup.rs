//! The `delete` action: containerd calls it when the shim is gone, to undo what Create did
//! from the state on disk (the bundle's stockade.json and libcontainer's state).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use containerd_shim::Flags;
use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};
use libcontainer::container::Container;
use libcontainer::signal::Signal as LcSignal;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::state::{self, Record};
use crate::{binds, cgroups, container, podrange};

/// Undo what Create recorded in `record`, after libcontainer's own delete: sweep the
/// container's cgroup, remove the pod's cgroup, give back the pod's ID range, remove the
/// record. The sweep matters when libcontainer's delete failed half-way (a Create
/// interrupted inside libcontainer leaves the cgroup frozen with processes in it). While
/// processes may still run under the pod's IDs, the range and the record are kept.
pub fn undo_record(id: &str, bundle: &Path, record: &Record) -> anyhow::Result<()> {
    let left = match &record.cgroups_path {
        Some(dir) => cgroups::kill_and_remove(dir, Duration::from_secs(5)),
        None => Vec::new(),
    };
    if !left.is_empty() {
        anyhow::bail!(
            "container {id}: cgroup {} not removed ({left:?}); the ID range of pod {} is kept",
            record.cgroups_path.as_deref().unwrap_or_default(),
            record.sandbox_id
        );
    }
    if let Some(dir) = &record.pod_cgroup {
        cgroups::remove_empty(dir);
    }
    if let Some(range) = podrange::release(record)? {
        tracing::info!(pod = %record.sandbox_id, %range, "ID range released");
    }
    let _ = std::fs::remove_file(bundle.join(state::RECORD_FILE));
    Ok(())
}

pub fn run(flags: &Flags) -> anyhow::Result<()> {
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().context("current directory")?
    } else {
        PathBuf::from(&flags.bundle)
    };
    // First the dead server's stragglers, so nothing recreates what is removed below.
    let dead = DeadServer::find(&bundle);
    if let Some(server) = &dead {
        server.kill_orphans();
    }
    let root = state::libcontainer_root(&flags.namespace);
    let dir = root.join(&flags.id);
    let mut pid = 0;
    if dir.exists() {
        match Container::load(dir.clone()) {
            Ok(mut c) => {
                pid = c.pid().map(|p| p.as_raw()).unwrap_or(0);
                if pid > 0 && running(pid) {
                    tracing::info!(container = %flags.id, pid, "killing what the dead shim left running");
                }
                if let Ok(sig) = LcSignal::try_from(9) {
                    if let Err(e) = c.kill(sig, true) {
                        tracing::debug!(error = %e, "kill during cleanup");
                    }
                }
                if let Err(e) = c.delete(true) {
                    tracing::warn!(error = %e, "libcontainer delete failed, removing state");
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "unreadable libcontainer state, removing it");
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    container::unmount_rootfs(&bundle.join("rootfs"), &bundle.join(state::ROOTFS_STAGING))?;
    binds::unstage(&bundle);
    let record = Record::load(&bundle)?;
    if record.is_none() {
        tracing::debug!(bundle = %bundle.display(), "no record of what Create did");
    }
    let failure = record.and_then(|record| undo_record(&flags.id, &bundle, &record).err());
    let _ = std::fs::remove_file(bundle.join(state::SECCOMP_FILE));
    let _ =
        stockade_runtime::node_state::remove(&crate::state::state_dir().containers(), &flags.id);
    if let Some(server) = &dead {
        server.remove_socket();
    }
    if let Some(e) = failure {
        return Err(e);
    }

    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let resp = DeleteResponse {
        pid: u32::try_from(pid).unwrap_or(0),
        exit_status: 128 + 9,
        exited_at: MessageField::some(Timestamp {
            seconds: i64::try_from(d.as_secs()).unwrap_or(0),
            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
            ..Default::default()
        }),
        ..Default::default()
    };
    std::io::stdout().write_all(&resp.write_to_bytes()?)?;
    Ok(())
}

/// The pod's shim server, found dead: the socket its bundle's `address` file names
/// (written by `start`) is there, and no server process runs for it any more.
struct DeadServer {
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
    let own = std::fs::metadata("/proc/self/exe").ok();
    let own_userns = std::fs::metadata("/proc/self/ns/user").ok();
    let same_file =
        |a: &Option<std::fs::Metadata>, b: std::io::Result<std::fs::Metadata>| match (a, b) {
            (Some(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
            _ => false,
        };
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        // Empty once a process is exiting (its memory is gone before its files are).
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        if !args
            .windows(2)
            .any(|w| w[0] == b"-socket" && w[1] == address.as_bytes())
        {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // Fields after the command name: state, ppid, pgrp, session, ...
        let Some(fields) = stat.rfind(')').map(|i| &stat[i + 1..]) else {
            continue;
        };
        let fields: Vec<&str> = fields.split_whitespace().collect();
        let our_exe = same_file(&own, std::fs::metadata(entry.path().join("exe")));
        let session_leader = fields.get(3).and_then(|s| s.parse::<i32>().ok()) == Some(pid);
        found.push(SocketProcess {
            pid,
            server_like: session_leader
                && same_file(&own_userns, std::fs::metadata(entry.path().join("ns/user"))),
            zombie: matches!(fields.first(), Some(&"Z") | Some(&"X")),
            our_exe,
        });
    }
    found
}

impl DeadServer {
    fn find(bundle: &Path) -> Option<DeadServer> {
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
    fn kill_orphans(&self) {
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
        while killed.iter().any(|&pid| running(pid)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Remove the socket the SIGKILLed server could not.
    fn remove_socket(&self) {
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

/// The process exists and is not a zombie.
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|s| s != "Z" && s != "X")
        })
        .unwrap_or(false)
}
