//! Who holds an allocation, and whether anything still runs under a range (read from
//! /proc through the `procfs` crate).

use std::io;

use serde::{Deserialize, Serialize};

use super::IdRange;

/// The process whose life keeps an allocation: its pid and its start time (clock ticks
/// since boot, field 22 of /proc/PID/stat), so a recycled pid is not mistaken for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    pub pid: i32,
    pub start_time: u64,
}

impl Owner {
    /// The calling process.
    pub fn current() -> io::Result<Owner> {
        Owner::of(std::process::id() as i32)
    }

    pub fn of(pid: i32) -> io::Result<Owner> {
        Ok(Owner {
            pid,
            start_time: process_start_time(pid)?,
        })
    }

    /// The same process still exists (same pid, same start time).
    pub fn is_alive(&self) -> bool {
        matches!(process_start_time(self.pid), Ok(t) if t == self.start_time)
    }
}

/// Start time of a process; fails when there is no such process.
fn process_start_time(pid: i32) -> io::Result<u64> {
    procfs::process::Process::new(pid)
        .and_then(|p| p.stat())
        .map(|stat| stat.starttime)
        .map_err(|e| match e {
            procfs::ProcError::NotFound(_) => io::Error::from(io::ErrorKind::NotFound),
            other => io::Error::other(other),
        })
}

/// Whether any process on the host runs with a real, effective, saved or filesystem UID
/// or GID inside `range`. Used before reclaiming: a pod whose shim died may still have
/// container processes running under its IDs, and handing the range out again would put
/// two pods under the same IDs.
pub fn range_in_use(range: &IdRange) -> bool {
    let Ok(processes) = procfs::process::all_processes() else {
        // Cannot tell: assume in use, never hand out a range that might be live.
        return true;
    };
    // Processes come and go during the scan: a vanished one is not in use.
    processes
        .flatten()
        .filter_map(|p| p.status().ok())
        .any(|s| {
            [
                s.ruid, s.euid, s.suid, s.fuid, s.rgid, s.egid, s.sgid, s.fgid,
            ]
            .into_iter()
            .any(|id| range.contains_id(id))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_of_self_and_dead_pid() {
        let me = Owner::current().unwrap();
        assert!(me.is_alive());
        let stale = Owner {
            pid: me.pid,
            start_time: me.start_time + 1,
        };
        assert!(!stale.is_alive(), "a recycled pid must not look alive");
        // pid_max is at most 2^22: this pid never exists.
        let err = Owner::of(i32::MAX).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
    }

    #[test]
    fn a_range_holding_our_own_uid_is_in_use() {
        let uid = nix::unistd::getuid().as_raw();
        let ours = IdRange {
            first: uid,
            size: 1,
        };
        assert!(range_in_use(&ours));
        // No process on a test machine runs in the last IDs below the kernel's "no ID".
        let nobody = IdRange {
            first: u32::MAX - 1024,
            size: 1000,
        };
        assert!(!range_in_use(&nobody));
    }
}
