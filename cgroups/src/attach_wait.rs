//! Keeping the kernel's cgroup-migration lock ready while a container is moved.
//!
//! Moving a process into a cgroup (a write of its pid to `cgroup.procs`, as libcgroups
//! does for each container's intermediate process) takes the kernel's global
//! `cgroup_threadgroup_rwsem` for writing. After a quiet spell the first writer waits for
//! an RCU grace period there (`rcu_sync_enter`); writers that come before the grace period
//! after the last writer's exit has passed do not. On this 2-core VM (HZ 250, lazy RCU)
//! that wait is 5 to 8 ms, and it sits on the path of every Create; a write 15 ms after
//! the last one is still free, one 20 ms after is not.
//!
//! [`Host::open_attach_window`] writes the calling process's own pid to the `cgroup.procs`
//! of the cgroup it is already in (moving nothing) on a thread of its own, so the grace
//! period runs while Create does its own work, and writes it again every
//! [`KEEP_EVERY`] until the returned [`AttachWindow`] is dropped: the container's move
//! finds the lock ready however early or late it comes. A write that waits for nothing
//! costs 3 to 10 µs.
//!
//! On cgroup v1 there is no window: libcgroups' v1 manager, as patched in
//! third_party/libcgroups (STOCKADE.md, item 5), moves a single-threaded caller (the
//! container's intermediate process adds itself) by writing `0` to `tasks`, which takes no
//! global lock. There a window would only cost: a writer waiting for the grace period
//! holds `cgroup_mutex` meanwhile, and the container's own cgroup mkdirs and move would
//! wait for it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::host::{Hierarchy, Host};

/// Shorter than the shortest grace period seen here (the window stays open for at least
/// one after each write).
const KEEP_EVERY: Duration = Duration::from_millis(5);
/// A window nobody closes (a Create stuck, an Exec never started) ends by itself.
const LONGEST: Duration = Duration::from_secs(2);

/// Open while a container's (or exec's) cgroup move may come; dropping it closes.
#[derive(Debug)]
pub struct AttachWindow {
    _open: Option<mpsc::Sender<()>>,
}

impl AttachWindow {
    /// A window that keeps nothing open (no cgroup setup here).
    pub fn none() -> AttachWindow {
        AttachWindow { _open: None }
    }
}

impl Host {
    /// Start the grace period a cgroup move waits for, without waiting for it here, and
    /// keep the lock ready until the window is dropped.
    pub fn open_attach_window(&'static self) -> AttachWindow {
        if self.hierarchy() != Hierarchy::Unified {
            return AttachWindow::none();
        }
        // The lookup too runs on the thread: Create's own path does no I/O for this.
        open_window(move || self.own_procs_file())
    }

    /// `cgroup.procs` of this process's own cgroup: v2's, or the pids hierarchy's on v1
    /// (every hierarchy shares the one lock).
    fn own_procs_file(&self) -> Option<PathBuf> {
        let own = crate::proc::process_cgroups(std::process::id() as i32).ok()?;
        let (mount, controller) = match self.hierarchy() {
            Hierarchy::Unified => (self.root().to_path_buf(), None),
            Hierarchy::Legacy | Hierarchy::Hybrid => (self.v1_mount("pids"), Some("pids")),
        };
        let entry = own.iter().find(|c| match controller {
            None => c.hierarchy == 0,
            Some(name) => c.controllers.iter().any(|k| k == name),
        })?;
        let dir = mount.join(entry.pathname.trim_start_matches('/'));
        Some(dir.join("cgroup.procs"))
    }
}

/// Writes this process's pid to the file `target` names, now and every [`KEEP_EVERY`],
/// on a thread of its own, until the returned window is dropped (or [`LONGEST`] passed).
fn open_window(target: impl FnOnce() -> Option<PathBuf> + Send + 'static) -> AttachWindow {
    let (open, closed) = mpsc::channel::<()>();
    let spawned = std::thread::Builder::new()
        .name("attach-window".into())
        .spawn(move || match target() {
            Some(procs) => keep_writing(&procs, &closed),
            None => tracing::debug!("no cgroup of this process to keep the attach window with"),
        });
    match spawned {
        Ok(_) => AttachWindow { _open: Some(open) },
        Err(e) => {
            tracing::debug!(error = %e, "attach window not opened");
            AttachWindow::none()
        }
    }
}

fn keep_writing(procs: &Path, closed: &mpsc::Receiver<()>) {
    let pid = std::process::id().to_string();
    let opened = Instant::now();
    // One open for all the writes: a write alone is the cheap part.
    let mut file = match std::fs::OpenOptions::new().write(true).open(procs) {
        Ok(file) => file,
        Err(e) => {
            tracing::debug!(file = %procs.display(), error = %e, "attach window not opened");
            return;
        }
    };
    loop {
        if let Err(e) = file.write_all(pid.as_bytes()) {
            tracing::debug!(file = %procs.display(), error = %e, "attach window closed");
            return;
        }
        match closed.recv_timeout(KEEP_EVERY) {
            Err(mpsc::RecvTimeoutError::Timeout) if opened.elapsed() < LONGEST => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The file written is this process's own cgroup (so the write moves nothing), and
    /// writing it works: the test process stays where it was.
    #[test]
    fn the_attach_wait_writes_the_own_cgroup_and_moves_nothing() {
        let Ok(host) = Host::detect() else {
            eprintln!("skipped: no cgroup setup readable here");
            return;
        };
        let procs = host.own_procs_file().expect("own cgroup.procs");
        let me = std::process::id().to_string();
        let listed = std::fs::read_to_string(&procs).expect("reading own cgroup.procs");
        assert!(
            listed.lines().any(|l| l == me),
            "{} does not list this process",
            procs.display()
        );
        let before = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
        if std::fs::write(&procs, &me).is_err() {
            eprintln!(
                "skipped the write: {} is not writable here",
                procs.display()
            );
            return;
        }
        let after = std::fs::read_to_string("/proc/self/cgroup").expect("/proc/self/cgroup");
        assert_eq!(before, after);
    }

    /// The window writes again and again while open and stops once dropped (a plain file
    /// stands in for `cgroup.procs`: each write lands after the last).
    #[test]
    fn the_window_keeps_writing_until_it_is_dropped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("cgroup.procs");
        std::fs::write(&file, "").expect("creating the stand-in");
        let one = std::process::id().to_string().len() as u64;
        let len = || std::fs::metadata(&file).expect("stand-in").len();
        let target = file.clone();
        let window = open_window(move || Some(target));
        std::thread::sleep(KEEP_EVERY * 8);
        drop(window);
        std::thread::sleep(KEEP_EVERY * 4);
        let written = len();
        assert!(
            written >= 3 * one,
            "{written} bytes: fewer than 3 writes while open"
        );
        assert_eq!(written % one, 0, "a write was cut short");
        std::thread::sleep(KEEP_EVERY * 6);
        assert_eq!(
            len(),
            written,
            "writes went on after the window was dropped"
        );
    }
}
