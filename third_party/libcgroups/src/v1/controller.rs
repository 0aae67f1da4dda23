use std::fs;
use std::path::Path;

use nix::unistd::Pid;
use pathrs::flags::OpenFlags;
use pathrs::procfs::{ProcfsBase, ProcfsHandle};
use procfs::FromRead;

use crate::common::{self, CGROUP_PROCS, ControllerOpt, WrapIoResult, WrappedIoError};

/// Stockade patch (STOCKADE.md, item 5): how a task is moved into a v1 cgroup.
///
/// Writing a pid to `cgroup.procs` takes the kernel's global `cgroup_threadgroup_rwsem` for
/// writing, and after a quiet spell the first writer waits there for an RCU grace period
/// (5 to 19 ms on a 2-core VM with lazy RCU), holding `cgroup_mutex`, so every cgroup mkdir
/// and move on the node waits with it. Writing `0` to `tasks` moves only the calling
/// thread and takes no global lock: for a single-threaded caller (libcontainer's
/// intermediate process, which adds itself) it moves the whole process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Task {
    /// `pid` written to `cgroup.procs`: the process with all its threads.
    Process(Pid),
    /// `0` written to `tasks`: the calling process, which has a single thread.
    CallingThread,
}

const CGROUP_TASKS: &str = "tasks";

impl Task {
    /// `pid` as the cheapest move that still moves all of its threads.
    pub(crate) fn of(pid: Pid) -> Task {
        if pid == nix::unistd::getpid() && calling_process_is_single_threaded() {
            Task::CallingThread
        } else {
            Task::Process(pid)
        }
    }

    /// Moves the task into the cgroup at `cgroup_path`, which must exist.
    pub(crate) fn write(self, cgroup_path: &Path) -> Result<(), WrappedIoError> {
        match self {
            Task::Process(pid) => common::write_cgroup_file(cgroup_path.join(CGROUP_PROCS), pid),
            Task::CallingThread => {
                common::write_cgroup_file_str(cgroup_path.join(CGROUP_TASKS), "0")
            }
        }
    }
}

/// Whether the calling process has one thread (`num_threads` of /proc/self/stat); false
/// where that cannot be read, so that the move falls back to `cgroup.procs`.
fn calling_process_is_single_threaded() -> bool {
    ProcfsHandle::new()
        .ok()
        .and_then(|procfs| {
            procfs
                .open(
                    ProcfsBase::ProcSelf,
                    "stat",
                    OpenFlags::O_RDONLY | OpenFlags::O_CLOEXEC,
                )
                .ok()
        })
        .and_then(|file| procfs::process::Stat::from_read(file).ok())
        .is_some_and(|stat| stat.num_threads == 1)
}

pub(super) trait Controller {
    type Error: From<WrappedIoError>;
    type Resource;

    /// Adds a new task specified by its pid to the cgroup
    // Stockade patch: the manager calls `add`; the crate's own tests still call this.
    #[allow(dead_code)]
    fn add_task(pid: Pid, cgroup_path: &Path) -> Result<(), Self::Error> {
        Self::add(Task::of(pid), cgroup_path)
    }

    /// Stockade patch: [`Controller::add_task`] with the kind of move decided (once per
    /// manager, for all of its controllers).
    fn add(task: Task, cgroup_path: &Path) -> Result<(), Self::Error> {
        fs::create_dir_all(cgroup_path).wrap_create_dir(cgroup_path)?;
        task.write(cgroup_path)?;
        Ok(())
    }

    /// Applies resource restrictions to the cgroup
    fn apply(controller_opt: &ControllerOpt, cgroup_root: &Path) -> Result<(), Self::Error>;

    /// Checks if the controller needs to handle this request
    fn needs_to_handle<'a>(controller_opt: &'a ControllerOpt) -> Option<&'a Self::Resource>;
}
