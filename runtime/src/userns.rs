//! A user-namespace fd for an [`IdRange`] before any container process exists.
//!
//! Idmapped mounts need a user namespace carrying the pod's mapping, but the rootfs is
//! mounted before the container's init is created. So a short-lived child is cloned
//! straight into a new user namespace (`clone(CLONE_NEWUSER)`), the parent writes its
//! uid_map and gid_map ("0 FIRST SIZE"), opens /proc/CHILD/ns/user and then kills the child
//! by its pid and reaps it. The open fd keeps the namespace alive.
//!
//! Thread safety: between clone and its exit the child only makes raw system calls
//! (`close`, `read`, `_exit`): it never allocates, locks or runs atfork handlers, so this is
//! safe to call from a single-threaded process and also from a multi-threaded one. The
//! caller must not reap children with `waitpid(-1)` concurrently in another thread (a
//! child reaped by someone else only makes the final `waitpid` here report ECHILD, which
//! is tolerated, but its pid could then be recycled before the kill).

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::idrange::IdRange;

#[derive(Debug, thiserror::Error)]
pub enum UsernsError {
    #[error("ID range {range} cannot be a user-namespace mapping (empty or past the largest ID)")]
    InvalidRange { range: IdRange },
    #[error("creating the helper process in a new user namespace: {0}")]
    Clone(#[source] io::Error),
    #[error("writing {file} of the helper process (mapping {line:?}): {source}")]
    WriteMap {
        file: String,
        line: String,
        source: io::Error,
    },
    #[error("opening {path}: {source}")]
    OpenNs { path: String, source: io::Error },
    #[error("creating a pipe for the helper process: {0}")]
    Pipe(#[source] io::Error),
}

/// The line written to uid_map and gid_map: container 0.. maps to `range`.
pub fn id_map_line(range: IdRange) -> String {
    format!("0 {} {}\n", range.first, range.size)
}

/// A new user namespace whose UIDs and GIDs 0..size map to `range` on the host.
///
/// `setgroups` is left at "allow": a privileged parent (CAP_SETGID over the parent
/// namespace) may write gid_map without denying it, and processes that later join the
/// namespace (container init, exec'd processes) need setgroups(2) to set the image user's
/// supplementary groups.
pub fn userns_fd(range: IdRange) -> Result<OwnedFd, UsernsError> {
    if !range.is_valid() {
        return Err(UsernsError::InvalidRange { range });
    }
    let (read_end, write_end) = pipe()?;

    // SAFETY: clone without CLONE_VM/CLONE_THREAD behaves like fork (the child gets a
    // copy-on-write copy of this process with just the calling thread). The child branch
    // below only makes async-signal-safe raw syscalls on fds it owns and then _exits, so
    // it is sound even when other threads held locks at the time of the clone. Stack and
    // tid pointers are NULL/0, which clone accepts in this fork-like mode on every arch.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if ret == 0 {
        // Child: wait for EOF (the parent closing its end, or dying), then leave.
        // SAFETY: only raw syscalls on this process's own fds; `_exit` never returns and
        // runs no destructors or atexit handlers inherited from the parent.
        unsafe {
            libc::close(write_end.as_raw_fd());
            let mut byte = 0u8;
            loop {
                let n = libc::read(read_end.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
                if n == -1 && *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                break;
            }
            libc::_exit(0);
        }
    }
    if ret < 0 {
        return Err(UsernsError::Clone(io::Error::last_os_error()));
    }
    drop(read_end);
    let child = Helper {
        pid: ret as libc::pid_t,
        release: Some(write_end),
    };

    let line = id_map_line(range);
    for file in ["uid_map", "gid_map"] {
        let path = format!("/proc/{}/{file}", child.pid);
        OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()))
            .map_err(|source| UsernsError::WriteMap {
                file: path,
                line: line.trim_end().to_string(),
                source,
            })?;
    }
    let path = format!("/proc/{}/ns/user", child.pid);
    let ns = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
        .map_err(|source| UsernsError::OpenNs {
            path: path.clone(),
            source,
        })?;
    drop(child);
    tracing::debug!(
        first = range.first,
        size = range.size,
        "user namespace created"
    );
    Ok(ns.into())
}

fn pipe() -> Result<(OwnedFd, OwnedFd), UsernsError> {
    let mut fds = [0; 2];
    // SAFETY: `fds` is a valid array of two c_ints for pipe2 to fill.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(UsernsError::Pipe(io::Error::last_os_error()));
    }
    // SAFETY: pipe2 succeeded: both fds are open and owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The helper child: ended and reaped on every path out of [`userns_fd`].
struct Helper {
    pid: libc::pid_t,
    release: Option<OwnedFd>,
}

impl Drop for Helper {
    fn drop(&mut self) {
        // EOF on its pipe ends the child by itself; the kill makes sure.
        self.release.take();
        // SAFETY: `pid` is our own unreaped child, so it cannot have been recycled.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        loop {
            let mut status = 0;
            // SAFETY: waits for our own child; `status` is a valid out-pointer.
            let r = unsafe { libc::waitpid(self.pid, &mut status, 0) };
            if r == -1 && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_line() {
        let r = IdRange {
            first: 200_000,
            size: 65_536,
        };
        assert_eq!(id_map_line(r), "0 200000 65536\n");
    }

    #[test]
    fn invalid_ranges_are_refused() {
        for r in [
            IdRange { first: 1, size: 0 },
            IdRange {
                first: u32::MAX - 1,
                size: 2,
            },
        ] {
            assert!(matches!(
                userns_fd(r),
                Err(UsernsError::InvalidRange { .. })
            ));
        }
    }
}
