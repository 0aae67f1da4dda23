//! OOM-kill notifications for one container cgroup.
//!
//! cgroup v1: an eventfd registered on `memory.oom_control` through
//! `cgroup.event_control`; the kernel signals it on every OOM in the cgroup and
//! once more when the cgroup is removed.
//! cgroup v2: inotify on `memory.events` (the kernel notifies a modification when
//! a counter changes) and a report each time `oom_kill` grows. cgroupfs sends no
//! IN_DELETE_SELF/IN_IGNORED for a removed cgroup's files, so removal is seen as
//! IN_DELETE of the cgroup's directory in its parent.
//!
//! Each watcher is one tokio task owning one fd; it ends, closing the fd, when
//! the cgroup is removed or the receiver is dropped.

use std::ffi::CString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::sync::mpsc;

use crate::parse::flat_keyed;
use crate::sample::container_path;
use crate::{CgroupError, Host};

/// Pending notifications per container before the watcher waits for the reader.
const CHANNEL_CAPACITY: usize = 16;

/// Starts watching the container's cgroup for OOM kills; every report carries
/// `container_id`. Must be called inside a tokio runtime.
///
/// The channel closes when the cgroup is removed; dropping the receiver stops
/// the watcher.
pub fn watch(
    container_id: String,
    cgroups_path: &str,
) -> Result<mpsc::Receiver<String>, CgroupError> {
    let path = container_path(cgroups_path)?;
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| CgroupError::Watch {
        container: container_id.clone(),
        detail: "oom::watch must be called inside a tokio runtime".into(),
    })?;
    let host = Host::current()?;
    let failed = |e: WatchError| CgroupError::Watch {
        container: container_id.clone(),
        detail: e.0,
    };
    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
    let dir = host.dir("memory", &path);
    if host.is_unified() {
        let watcher = V2Watcher::new(dir, "memory.events").map_err(failed)?;
        runtime.spawn(watcher.run(container_id, tx));
    } else {
        let watcher = V1Watcher::new(dir).map_err(failed)?;
        runtime.spawn(watcher.run(container_id, tx));
    }
    Ok(rx)
}

/// What went wrong setting a watcher up, with the path it was about.
#[derive(Debug)]
struct WatchError(String);

impl std::fmt::Display for WatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl WatchError {
    fn io(what: impl std::fmt::Display) -> impl FnOnce(io::Error) -> WatchError {
        move |e| WatchError(format!("{what}: {e}"))
    }
}

// ---------------------------------------------------------------------------
// cgroup v1

struct V1Watcher {
    dir: PathBuf,
    eventfd: AsyncFd<File>,
}

impl V1Watcher {
    fn new(dir: PathBuf) -> Result<Self, WatchError> {
        let oom_control_path = dir.join("memory.oom_control");
        let oom_control = File::open(&oom_control_path).map_err(WatchError::io(format!(
            "opening {}",
            oom_control_path.display()
        )))?;
        // SAFETY: eventfd takes no pointers; the result is checked below.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(WatchError::io("creating an eventfd")(
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `raw` is a fresh eventfd that nothing else owns.
        let eventfd = unsafe { OwnedFd::from_raw_fd(raw) };
        let control_path = dir.join("cgroup.event_control");
        let registration = format!("{} {}", eventfd.as_raw_fd(), oom_control.as_raw_fd());
        fs::write(&control_path, registration).map_err(WatchError::io(format!(
            "registering an OOM eventfd in {}",
            control_path.display()
        )))?;
        // The kernel keeps its own reference to the eventfd; the memory.oom_control
        // fd was only needed to name the event and closes here.
        drop(oom_control);
        let eventfd =
            register(File::from(eventfd)).map_err(WatchError::io("polling the OOM eventfd"))?;
        Ok(Self { dir, eventfd })
    }

    async fn run(self, container_id: String, tx: mpsc::Sender<String>) {
        loop {
            let count = tokio::select! {
                _ = tx.closed() => break,
                count = read_ready(&self.eventfd, read_eventfd) => count,
            };
            let count = match count {
                Ok(count) => count,
                Err(e) => {
                    tracing::warn!(container_id = %container_id, error = %e, "OOM eventfd read failed; stopping the watcher");
                    break;
                }
            };
            // The eventfd also fires once when the cgroup is removed, after its
            // files are gone; a count above one then still carries an OOM.
            let removed = !self.dir.join("memory.oom_control").exists();
            if !removed || count > 1 {
                tracing::info!(container_id = %container_id, "container cgroup hit OOM");
                if tx.send(container_id.clone()).await.is_err() {
                    break;
                }
            }
            if removed {
                break;
            }
        }
        tracing::debug!(container_id = %container_id, cgroup = %self.dir.display(), "OOM watcher stopped");
        // Close the fd before the channel: once the receiver sees the end, no fd is left.
        drop(self);
        drop(tx);
    }
}

fn read_eventfd(file: &File) -> io::Result<u64> {
    let mut buf = [0u8; 8];
    let n = (&*file).read(&mut buf)?;
    if n != buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("short eventfd read of {n} bytes"),
        ));
    }
    Ok(u64::from_ne_bytes(buf))
}

/// Registers an owned fd with the tokio reactor for readability.
fn register(file: File) -> io::Result<AsyncFd<File>> {
    // SAFETY: the File owns its fd, so the fd stays open and unchanged until the
    // AsyncFd (which owns the File) is dropped.
    let fd = unsafe { AsyncFd::register_with_interest(file, Interest::READABLE) }?;
    Ok(fd)
}

/// Waits until `fd` is readable and reads it without blocking.
async fn read_ready<T>(
    fd: &AsyncFd<File>,
    mut read: impl FnMut(&File) -> io::Result<T>,
) -> io::Result<T> {
    loop {
        let mut guard = fd.readable().await?;
        match guard.try_io(|inner| read(inner.get_ref())) {
            Ok(result) => return result,
            Err(_would_block) => continue,
        }
    }
}

// ---------------------------------------------------------------------------
// cgroup v2

struct V2Watcher {
    dir: PathBuf,
    /// memory.events; a parameter so tests can watch another cgroup2 file.
    events_file: &'static str,
    leaf: Vec<u8>,
    inotify: AsyncFd<File>,
    parent_wd: i32,
    last_oom_kills: u64,
}

impl V2Watcher {
    fn new(dir: PathBuf, events_file: &'static str) -> Result<Self, WatchError> {
        let (Some(parent), Some(leaf)) = (dir.parent(), dir.file_name()) else {
            return Err(WatchError(format!(
                "cgroup {} has no parent",
                dir.display()
            )));
        };
        let events_path = dir.join(events_file);
        // SAFETY: inotify_init1 takes no pointers; the result is checked below.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(WatchError::io("creating an inotify instance")(
                io::Error::last_os_error(),
            ));
        }
        // SAFETY: `raw` is a fresh inotify fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // Its modifications are the wake-ups; which watch fired does not matter.
        add_watch(&fd, &events_path, libc::IN_MODIFY)?;
        let parent_wd = add_watch(&fd, parent, libc::IN_DELETE | libc::IN_ONLYDIR)?;
        // Read the baseline after the watches exist so no kill falls in between.
        let last_oom_kills = read_oom_kills(&events_path)?
            .ok_or_else(|| WatchError(format!("cgroup {} does not exist", dir.display())))?;
        let inotify = register(File::from(fd)).map_err(WatchError::io("polling the inotify fd"))?;
        Ok(Self {
            leaf: leaf.as_bytes().to_vec(),
            dir,
            events_file,
            inotify,
            parent_wd,
            last_oom_kills,
        })
    }

    async fn run(mut self, container_id: String, tx: mpsc::Sender<String>) {
        let mut buf = vec![0u8; 4096];
        loop {
            let read = tokio::select! {
                _ = tx.closed() => break,
                n = read_ready(&self.inotify, |f| (&*f).read(&mut buf)) => n,
            };
            let n = match read {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(container_id = %container_id, error = %e, "inotify read failed; stopping the OOM watcher");
                    break;
                }
            };
            let mut removed =
                removal_seen(&parse_inotify_events(&buf[..n]), self.parent_wd, &self.leaf);
            match read_oom_kills(&self.dir.join(self.events_file)) {
                Ok(Some(kills)) if kills > self.last_oom_kills => {
                    self.last_oom_kills = kills;
                    tracing::info!(container_id = %container_id, oom_kills = kills, "container cgroup had an OOM kill");
                    if tx.send(container_id.clone()).await.is_err() {
                        break;
                    }
                }
                Ok(Some(_)) => {}
                Ok(None) => removed = true,
                Err(e) => {
                    tracing::warn!(container_id = %container_id, error = %e, "reading memory.events failed; stopping the OOM watcher");
                    break;
                }
            }
            if removed {
                break;
            }
        }
        tracing::debug!(container_id = %container_id, cgroup = %self.dir.display(), "OOM watcher stopped");
        // Close the fd before the channel: once the receiver sees the end, no fd is left.
        drop(self);
        drop(tx);
    }
}

/// Whether the events show our cgroup directory deleted from its parent (or a
/// watch dropped, which only happens when what it watched is gone).
fn removal_seen(events: &[InotifyEvent], parent_wd: i32, leaf: &[u8]) -> bool {
    events.iter().any(|ev| {
        (ev.wd == parent_wd && ev.mask & libc::IN_DELETE != 0 && ev.name == leaf)
            || ev.mask & libc::IN_IGNORED != 0
    })
}

fn add_watch(fd: &OwnedFd, path: &Path, mask: u32) -> Result<i32, WatchError> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| WatchError(format!("path {} contains a NUL byte", path.display())))?;
    // SAFETY: `fd` is a live inotify fd and `c_path` a NUL-terminated string that
    // outlives the call.
    let wd = unsafe { libc::inotify_add_watch(fd.as_raw_fd(), c_path.as_ptr(), mask) };
    if wd < 0 {
        return Err(WatchError::io(format!("watching {}", path.display()))(
            io::Error::last_os_error(),
        ));
    }
    Ok(wd)
}

/// `oom_kill` from memory.events; `None` once the cgroup is gone.
fn read_oom_kills(path: &Path) -> Result<Option<u64>, WatchError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(parse_oom_kills(&s))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // A cgroup file being removed reads as ENODEV.
        Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(None),
        Err(e) => Err(WatchError::io(format!("reading {}", path.display()))(e)),
    }
}

/// `oom_kill` of a memory.events (v2) or memory.oom_control (v1) text.
pub(crate) fn parse_oom_kills(content: &str) -> u64 {
    flat_keyed(content, "oom_kill").unwrap_or(0)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InotifyEvent {
    pub wd: i32,
    pub mask: u32,
    /// File name inside a watched directory, without NUL padding.
    pub name: Vec<u8>,
}

/// Splits a buffer read from an inotify fd into events (struct inotify_event:
/// wd, mask, cookie, len, then `len` bytes of NUL-padded name).
pub(crate) fn parse_inotify_events(buf: &[u8]) -> Vec<InotifyEvent> {
    const HEADER: usize = 16;
    let word = |at: usize| -> Option<[u8; 4]> { buf.get(at..at + 4)?.try_into().ok() };
    let mut events = Vec::new();
    let mut at = 0;
    while at + HEADER <= buf.len() {
        let (Some(wd), Some(mask), Some(len)) = (word(at), word(at + 4), word(at + 12)) else {
            break;
        };
        let len = u32::from_ne_bytes(len) as usize;
        let Some(raw_name) = buf.get(at + HEADER..at + HEADER + len) else {
            break;
        };
        let name_len = raw_name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(raw_name.len());
        events.push(InotifyEvent {
            wd: i32::from_ne_bytes(wd),
            mask: u32::from_ne_bytes(mask),
            name: raw_name[..name_len].to_vec(),
        });
        at += HEADER + len;
    }
    events
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Mutex, MutexGuard};

    /// Tests that open eventfd or inotify fds (tokio runtimes included) hold
    /// this, so fd-leak checks elsewhere in the same test binary see only theirs.
    pub(crate) static FD_LOCK: Mutex<()> = Mutex::new(());

    /// Takes [`FD_LOCK`] and then builds a runtime, in that order.
    pub(crate) fn locked_runtime() -> (MutexGuard<'static, ()>, tokio::runtime::Runtime) {
        let guard = FD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        (guard, rt)
    }

    fn raw_event(wd: i32, mask: u32, name: &str) -> Vec<u8> {
        // Names are NUL-padded to a multiple of the header alignment.
        let len = if name.is_empty() {
            0
        } else {
            (name.len() / 16 + 1) * 16
        };
        let mut buf = Vec::new();
        buf.extend(wd.to_ne_bytes());
        buf.extend(mask.to_ne_bytes());
        buf.extend(0u32.to_ne_bytes());
        buf.extend((len as u32).to_ne_bytes());
        let mut padded = name.as_bytes().to_vec();
        padded.resize(len, 0);
        buf.extend(padded);
        buf
    }

    #[test]
    fn inotify_buffer_splits_into_events_with_names() {
        let mut buf = raw_event(1, libc::IN_MODIFY, "");
        buf.extend(raw_event(
            2,
            libc::IN_DELETE | libc::IN_ISDIR,
            "ctr-0123456789abcdef",
        ));
        buf.extend(raw_event(1, libc::IN_IGNORED, ""));
        let events = parse_inotify_events(&buf);
        assert_eq!(
            events,
            vec![
                InotifyEvent {
                    wd: 1,
                    mask: libc::IN_MODIFY,
                    name: vec![]
                },
                InotifyEvent {
                    wd: 2,
                    mask: libc::IN_DELETE | libc::IN_ISDIR,
                    name: b"ctr-0123456789abcdef".to_vec()
                },
                InotifyEvent {
                    wd: 1,
                    mask: libc::IN_IGNORED,
                    name: vec![]
                },
            ]
        );
    }

    #[test]
    fn only_our_directory_deleted_from_the_parent_counts_as_removal() {
        let ev = |wd, mask, name: &str| InotifyEvent {
            wd,
            mask,
            name: name.as_bytes().to_vec(),
        };
        let parent = 2;
        let sibling = [ev(parent, libc::IN_DELETE | libc::IN_ISDIR, "other")];
        assert!(!removal_seen(&sibling, parent, b"ctr"));
        let modified = [ev(1, libc::IN_MODIFY, "")];
        assert!(!removal_seen(&modified, parent, b"ctr"));
        let ours = [
            ev(1, libc::IN_MODIFY, ""),
            ev(parent, libc::IN_DELETE | libc::IN_ISDIR, "ctr"),
        ];
        assert!(removal_seen(&ours, parent, b"ctr"));
        // A prefix of our name is someone else.
        let prefix = [ev(parent, libc::IN_DELETE | libc::IN_ISDIR, "ct")];
        assert!(!removal_seen(&prefix, parent, b"ctr"));
        assert!(removal_seen(&[ev(1, libc::IN_IGNORED, "")], parent, b"ctr"));
    }

    #[test]
    fn truncated_inotify_buffer_keeps_whole_events_only() {
        let mut buf = raw_event(1, libc::IN_MODIFY, "");
        let second = raw_event(2, libc::IN_DELETE, "ctr");
        buf.extend(&second[..second.len() - 4]);
        assert_eq!(parse_inotify_events(&buf).len(), 1);
        assert!(parse_inotify_events(&buf[..10]).is_empty());
    }

    #[test]
    fn oom_kill_counter_parses_from_v1_and_v2_files() {
        assert_eq!(
            parse_oom_kills("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n"),
            2
        );
        assert_eq!(
            parse_oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 5\n"),
            5
        );
        assert_eq!(parse_oom_kills("oom_kill_disable 0\nunder_oom 1\n"), 0);
    }

    #[test]
    fn watch_refuses_bad_paths_and_missing_cgroups() {
        let (_lock, rt) = locked_runtime();
        let _enter = rt.enter();
        let err = watch("c1".into(), "relative/path").unwrap_err();
        assert!(err.to_string().contains("must be absolute"), "{err}");
        let err = watch("c1".into(), "/").unwrap_err();
        assert!(err.to_string().contains("root cgroup"), "{err}");
        let missing = format!("/stockade-missing-{}/ctr", std::process::id());
        let err = watch("c1".into(), &missing).unwrap_err().to_string();
        assert!(
            err.contains("c1") && err.contains("stockade-missing"),
            "{err}"
        );
    }

    /// A cgroup2 mount on this host (the unified root, or the hybrid
    /// /sys/fs/cgroup/unified), from mountinfo.
    fn cgroup2_mount() -> Option<PathBuf> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        mountinfo.lines().find_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            if right.split_whitespace().next()? != "cgroup2" {
                return None;
            }
            Some(PathBuf::from(left.split_whitespace().nth(4)?))
        })
    }

    /// Removal of a cgroup2 directory sends no IN_IGNORED for its files; the
    /// watcher must notice the IN_DELETE in the parent, stop and close its fd.
    /// Runs for real on any cgroup2 mount (hybrid hosts have one without
    /// controllers, so cgroup.events stands in for memory.events there).
    #[test]
    fn v2_watcher_stops_when_the_cgroup_is_removed() {
        let Some(mount) = cgroup2_mount() else {
            eprintln!("no cgroup2 mount on this host; skipping");
            return;
        };
        let (_lock, rt) = locked_runtime();
        rt.block_on(v2_watcher_stops(mount));
    }

    async fn v2_watcher_stops(mount: PathBuf) {
        let parent = mount.join(format!("stockade-oomtest-{}", std::process::id()));
        let dir = parent.join("ctr");
        fs::create_dir_all(&dir).unwrap();
        struct Cleanup(PathBuf, PathBuf);
        impl Drop for Cleanup {
            fn drop(&mut self) {
                let _ = fs::remove_dir(&self.0);
                let _ = fs::remove_dir(&self.1);
            }
        }
        let _cleanup = Cleanup(dir.clone(), parent.clone());

        let watcher = V2Watcher::new(dir.clone(), "cgroup.events").unwrap();
        let fd = watcher.inotify.as_raw_fd();
        let (tx, mut rx) = mpsc::channel(1);
        let task = tokio::spawn(watcher.run("c1".to_string(), tx));

        fs::remove_dir(&dir).unwrap();
        let end = tokio::time::timeout(std::time::Duration::from_secs(30), rx.recv())
            .await
            .expect("the watcher did not stop after the cgroup was removed");
        assert_eq!(end, None, "no OOM was reported");
        task.await.unwrap();
        let target = fs::read_link(format!("/proc/self/fd/{fd}")).ok();
        assert_ne!(
            target.map(|t| t.display().to_string()),
            Some("anon_inode:inotify".to_string()),
            "the inotify fd is still open"
        );
    }

    #[test]
    fn watch_outside_a_runtime_is_an_error() {
        let err = watch("c1".into(), "/stockade/ctr").unwrap_err();
        assert!(err.to_string().contains("tokio runtime"), "{err}");
    }
}
