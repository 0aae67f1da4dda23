//! A container process without a container: forked at Create, held before exec until
//! Start, then chrooted into the rootfs and exec'd. Plus the rootfs mount and stdio.
//!
//! Written by hand (fork + execve through libc) because std's `Command::spawn` returns
//! only after the child has exec'd, and Create must return the pid of a process that has
//! not run the command yet.

use std::ffi::CString;
use std::fs::OpenOptions;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use containerd_shim_protos::types::mount::Mount;

use crate::spec::Process;

const FIFO_OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything the child needs, prepared before fork: after fork it must not allocate.
pub struct Launch {
    root: CString,
    cwd: CString,
    exe: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
}

fn cstring(what: &str, s: &str) -> anyhow::Result<CString> {
    CString::new(s).map_err(|_| anyhow!("{what} {s:?} contains a NUL byte"))
}

impl Launch {
    pub fn new(process: &Process, root: &Path) -> anyhow::Result<Launch> {
        if process.terminal {
            bail!("the null runtime has no terminal support (process.terminal is true)");
        }
        let exe = process.executable(root)?;
        let cwd = if process.cwd.is_empty() {
            "/"
        } else {
            &process.cwd
        };
        Ok(Launch {
            root: cstring("root path", &root.to_string_lossy())?,
            cwd: cstring("process.cwd", cwd)?,
            exe: cstring("executable", &exe)?,
            argv: process
                .args
                .iter()
                .map(|a| cstring("process.args entry", a))
                .collect::<anyhow::Result<_>>()?,
            envp: process
                .env
                .iter()
                .map(|e| cstring("process.env entry", e))
                .collect::<anyhow::Result<_>>()?,
        })
    }
}

/// Signal a process started by [`fork_held`] and everything it started: it leads its own
/// session and process group (there is no PID namespace whose end would take its
/// children along). A group that is already gone is not an error.
pub fn signal_group(pid: i32, signal: i32) -> std::io::Result<()> {
    // SAFETY: kill(2) with plain integers; a negative pid names the process group.
    if unsafe { libc::kill(-pid, signal) } == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::ESRCH) {
        return Ok(());
    }
    Err(e)
}

/// A forked child waiting for [`Held::release`].
pub struct Held {
    pub pid: i32,
    go: OwnedFd,
    status: OwnedFd,
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into the array we own; checked below.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds are fresh and ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Report errno on the status pipe and exit; only async-signal-safe calls.
fn child_fail(status: RawFd) -> ! {
    // SAFETY: errno location, write and _exit are async-signal-safe.
    unsafe {
        let errno = *libc::__errno_location();
        let bytes = errno.to_ne_bytes();
        libc::write(status, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(127)
    }
}

/// Fork the process of `launch` with `stdio` as its fds 0, 1, 2; it waits before exec.
/// Call from one thread only (the shim's single runtime thread): the status pipe's write
/// end must reach no other child.
pub fn fork_held(launch: &Launch, stdio: [RawFd; 3]) -> anyhow::Result<Held> {
    let (go_r, go_w) = pipe().context("pipe")?;
    let (status_r, status_w) = pipe().context("pipe")?;
    let mut argv: Vec<*const libc::c_char> = launch.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = launch.envp.iter().map(|e| e.as_ptr()).collect();
    envp.push(std::ptr::null());
    let (go_r_fd, go_w_fd, status_fd) = (go_r.as_raw_fd(), go_w.as_raw_fd(), status_w.as_raw_fd());
    // SAFETY: fork in a multi-threaded process: the child only makes async-signal-safe
    // system calls on memory prepared above, then execs or _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error()).context("fork");
    }
    if pid == 0 {
        // SAFETY: child side, async-signal-safe calls only (see above).
        unsafe {
            libc::close(go_w_fd);
            // Rust ignores SIGPIPE; an exec'd program expects the default.
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::setsid();
            for (target, fd) in stdio.iter().enumerate() {
                if libc::dup2(*fd, target as RawFd) < 0 {
                    child_fail(status_fd);
                }
            }
            if libc::chroot(launch.root.as_ptr()) != 0 || libc::chdir(launch.cwd.as_ptr()) != 0 {
                child_fail(status_fd);
            }
            let mut b = 0u8;
            loop {
                let n = libc::read(go_r_fd, (&mut b as *mut u8).cast(), 1);
                if n == 1 {
                    break;
                }
                if n < 0 && *libc::__errno_location() == libc::EINTR {
                    continue;
                }
                // Never started: go quietly.
                libc::_exit(0);
            }
            // Nothing of the shim's but stdio reaches the workload (whatever containerd
            // inherited, e.g. a lock file, would live on in it). The status pipe closes
            // at exec like the rest.
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            libc::execve(launch.exe.as_ptr(), argv.as_ptr(), envp.as_ptr());
            child_fail(status_fd)
        }
    }
    drop((go_r, status_w));
    Ok(Held {
        pid,
        go: go_w,
        status: status_r,
    })
}

impl Held {
    /// Let the child exec; returns once it has (or with the errno it failed with).
    pub fn release(self) -> anyhow::Result<()> {
        let pid = self.pid;
        nix::unistd::write(&self.go, &[1]).context("releasing the held process")?;
        drop(self.go);
        let mut buf = [0u8; 4];
        let mut got = 0;
        while got < buf.len() {
            match nix::unistd::read(self.status.as_raw_fd(), &mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e).context("reading the exec status"),
            }
        }
        match got {
            0 => Ok(()),
            4 => Err(std::io::Error::from_raw_os_error(i32::from_ne_bytes(buf)))
                .with_context(|| format!("process {pid} failed before running its command")),
            n => bail!("process {pid}: short exec status ({n} bytes)"),
        }
    }
}

/// Character devices a shell expects in /dev (name, major, minor).
const DEVICES: &[(&str, u64, u64)] = &[
    ("null", 1, 3),
    ("zero", 1, 5),
    ("full", 1, 7),
    ("random", 1, 8),
    ("urandom", 1, 9),
];

fn mount_fs(fstype: &str, target: &Path, data: Option<&str>) -> anyhow::Result<()> {
    use nix::mount::MsFlags;
    std::fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    nix::mount::mount(
        Some(fstype),
        target,
        Some(fstype),
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        data,
    )
    .with_context(|| format!("mounting {fstype} on {}", target.display()))
}

/// The least a busybox container needs beyond its image: /proc (the shell runs applets
/// through /proc/self/exe) and a /dev with null, zero, full, random, urandom (a
/// background job's stdin is /dev/null; without it the pod sandbox's
/// `while :; do sleep 3600 & wait $!; done` spins on a CPU).
fn mount_proc_dev(root: &Path) -> anyhow::Result<()> {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    mount_fs("proc", &root.join("proc"), None)?;
    let dev = root.join("dev");
    mount_fs("tmpfs", &dev, Some("mode=755,size=64k"))?;
    for (name, major, minor) in DEVICES {
        let path = dev.join(name);
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(*major, *minor),
        )
        .with_context(|| format!("mknod {}", path.display()))?;
    }
    Ok(())
}

/// Mount containerd's rootfs mounts (one overlay, usually) on `target`, then its /proc
/// and /dev ([`mount_proc_dev`]). On failure nothing stays mounted.
pub fn mount_rootfs(mounts: &[Mount], target: &Path) -> anyhow::Result<()> {
    let mounted = mounts
        .iter()
        .try_for_each(|m| {
            containerd_shim::mount::mount_rootfs(
                Some(m.type_.as_str()).filter(|t| !t.is_empty()),
                Some(m.source.as_str()).filter(|s| !s.is_empty()),
                &m.options,
                target,
            )
            .map_err(|e| anyhow!("mounting {} on {}: {e}", m.type_, target.display()))
        })
        .and_then(|()| mount_proc_dev(target));
    if let Err(e) = mounted {
        unmount_rootfs(target);
        return Err(e);
    }
    Ok(())
}

/// Undo [`mount_rootfs`] (what is not mounted is skipped).
pub fn unmount_rootfs(target: &Path) {
    use nix::mount::{umount2, MntFlags};
    for p in [
        target.join("dev"),
        target.join("proc"),
        target.to_path_buf(),
    ] {
        let _ = umount2(&p, MntFlags::MNT_DETACH);
    }
}

/// stdin: opened for reading without waiting for a writer, then made blocking.
fn open_stdin(path: &str) -> anyhow::Result<OwnedFd> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("opening {path}"))?;
    clear_nonblock(&f).with_context(|| format!("{path}: clearing O_NONBLOCK"))?;
    Ok(f.into())
}

fn clear_nonblock(f: &impl AsRawFd) -> std::io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL on an fd we own.
    unsafe {
        let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// stdout/stderr: a fifo containerd reads (waiting for its reader, bounded), or file://.
async fn open_output(path: &str) -> anyhow::Result<OwnedFd> {
    if let Some(file) = path.strip_prefix("file://") {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(file)
            .with_context(|| format!("opening {file}"))?;
        return Ok(f.into());
    }
    if path.contains("://") {
        bail!("unsupported stdio URI {path:?} (fifos and file:// only)");
    }
    // Usually containerd's reader is there already: no thread needed.
    match OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => {
            clear_nonblock(&f).with_context(|| format!("{path}: clearing O_NONBLOCK"))?;
            return Ok(f.into());
        }
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {}
        Err(e) => return Err(e).with_context(|| format!("opening {path}")),
    }
    let p = path.to_string();
    let task = tokio::task::spawn_blocking(move || {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&p)
    });
    match tokio::time::timeout(FIFO_OPEN_TIMEOUT, task).await {
        Ok(r) => Ok(r
            .context("fifo open task")?
            .with_context(|| format!("opening {path}"))?
            .into()),
        Err(_) => {
            // Unblock the thread: a reader completes its open.
            let _ = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path);
            bail!("timed out opening {path}: containerd never opened its end")
        }
    }
}

fn dev_null(write: bool) -> anyhow::Result<OwnedFd> {
    Ok(OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/null")
        .context("opening /dev/null")?
        .into())
}

/// The process's fds 0, 1, 2 (/dev/null where containerd gave no path).
pub async fn open_stdio(stdin: &str, stdout: &str, stderr: &str) -> anyhow::Result<[OwnedFd; 3]> {
    let i = if stdin.is_empty() {
        dev_null(false)?
    } else {
        open_stdin(stdin)?
    };
    let o = if stdout.is_empty() {
        dev_null(true)?
    } else {
        open_output(stdout).await?
    };
    let e = if stderr.is_empty() {
        dev_null(true)?
    } else {
        open_output(stderr).await?
    };
    Ok([i, o, e])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn launch(args: &[&str]) -> Launch {
        let p = Process {
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec!["PATH=/usr/bin:/bin".into()],
            cwd: "/".into(),
            terminal: false,
        };
        Launch::new(&p, Path::new("/")).unwrap()
    }

    fn wait(pid: i32) -> nix::sys::wait::WaitStatus {
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap()
    }

    #[tokio::test(flavor = "current_thread")]
    async fn held_child_runs_only_when_released() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: chroot needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let [i, o, e] = open_stdio("", &format!("file://{}", out.display()), "")
            .await
            .unwrap();
        let held = fork_held(
            &launch(&["sh", "-c", "echo ran"]),
            [i.as_raw_fd(), o.as_raw_fd(), e.as_raw_fd()],
        )
        .unwrap();
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "",
            "ran before Start"
        );
        let pid = held.pid;
        held.release().unwrap();
        assert_eq!(
            wait(pid),
            nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 0)
        );
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "ran\n");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn group_signal_reaches_grandchildren_and_no_fd_is_inherited() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: chroot needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        // Not CLOEXEC, like a lock fd the shim inherited: the workload must not see it.
        let leak = std::fs::File::open("/dev/null").unwrap();
        // High, so it cannot be the fd `ls` opens /proc/self/fd with (the lowest free one,
        // 3 in the workload): a low number would make that fd look leaked.
        let leak_fd =
            nix::fcntl::fcntl(leak.as_raw_fd(), nix::fcntl::FcntlArg::F_DUPFD(100)).unwrap();
        let [i, o, e] = open_stdio("", &format!("file://{}", out.display()), "")
            .await
            .unwrap();
        let script = format!(
            "ls /proc/self/fd > {0}.fds; sleep 60 & echo $! > {0}.child; wait",
            out.display()
        );
        let held = fork_held(
            &launch(&["sh", "-c", &script]),
            [i.as_raw_fd(), o.as_raw_fd(), e.as_raw_fd()],
        )
        .unwrap();
        let pid = held.pid;
        held.release().unwrap();
        let child_file = dir.path().join("out.child");
        for _ in 0..200 {
            if std::fs::read_to_string(&child_file).is_ok_and(|s| s.ends_with('\n')) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let child: i32 = std::fs::read_to_string(&child_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let fds = std::fs::read_to_string(dir.path().join("out.fds")).unwrap();
        assert!(
            !fds.lines().any(|l| l == leak_fd.to_string()),
            "fd {leak_fd} leaked: {fds}"
        );
        signal_group(pid, libc::SIGKILL).unwrap();
        wait(pid);
        let mut gone = false;
        for _ in 0..200 {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // Gone, or a zombie waiting for init to reap it.
            if stat.is_empty() || stat.contains(") Z ") {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(gone, "grandchild {child} survived the group kill");
        assert!(
            signal_group(pid, libc::SIGKILL).is_ok(),
            "a gone group is not an error"
        );
        nix::unistd::close(leak_fd).unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn exec_failure_is_reported_with_its_errno() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: chroot needs root");
            return;
        }
        let [i, o, e] = open_stdio("", "", "").await.unwrap();
        // A directory cannot be exec'd: EACCES.
        let held = fork_held(
            &launch(&["/tmp"]),
            [i.as_raw_fd(), o.as_raw_fd(), e.as_raw_fd()],
        )
        .unwrap();
        let pid = held.pid;
        let err = format!("{:#}", held.release().unwrap_err());
        assert!(err.contains("Permission denied"), "{err}");
        assert_eq!(
            wait(pid),
            nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 127)
        );
    }

    #[test]
    fn rootfs_gets_proc_and_dev_and_leaves_no_mount() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir(&root).unwrap();
        let tmpfs = Mount {
            type_: "tmpfs".into(),
            source: "tmpfs".into(),
            options: vec!["size=1m".into()],
            ..Default::default()
        };
        mount_rootfs(&[tmpfs], &root).unwrap();
        use std::os::unix::fs::FileTypeExt;
        let null = std::fs::metadata(root.join("dev/null")).unwrap();
        assert!(null.file_type().is_char_device());
        assert!(root.join("proc/self/exe").exists());
        unmount_rootfs(&root);
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&root.display().to_string()), "{mounts}");
        assert!(
            !root.join("dev").exists(),
            "the tmpfs rootfs went away with its /dev"
        );
    }

    #[test]
    fn a_failed_rootfs_mount_leaves_nothing_mounted() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs");
        std::fs::create_dir(&root).unwrap();
        let bad = Mount {
            type_: "overlay".into(),
            source: "overlay".into(),
            options: vec![format!("lowerdir={}/missing", dir.path().display())],
            ..Default::default()
        };
        let e = format!("{:#}", mount_rootfs(&[bad], &root).unwrap_err());
        assert!(e.contains("mounting overlay on"), "{e}");
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(&root.display().to_string()), "{mounts}");
    }

    #[test]
    fn terminal_is_refused_by_name() {
        let p = Process {
            args: vec!["/bin/sh".into()],
            terminal: true,
            ..Default::default()
        };
        let e = Launch::new(&p, Path::new("/")).err().unwrap().to_string();
        assert!(e.contains("process.terminal"), "{e}");
    }
}
