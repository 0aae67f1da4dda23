//! The compiled default profile installed for real, in forked children.
//!
//! Each child installs the filters, runs raw syscalls and writes one errno per check (0 =
//! success) into a pipe; the parent compares. Between fork and _exit the child only makes
//! raw syscalls on data prepared before the fork (the test binary is multi-threaded).
//! Denied calls are chosen so that they would fail harmlessly or only affect the child if
//! the filter did not stop them (e.g. mount on a path that does not exist).

use std::ffi::CString;
use std::path::PathBuf;
use stockade_runtime::oci_spec::runtime::LinuxSeccomp;
use stockade_runtime::seccomp::{self, CompiledFilter};

const AF_ALG: i64 = 38;
const AF_VSOCK: i64 = 40;
const READ_IMPLIES_EXEC: i64 = 0x0040_0000;
const MAX_CHECKS: usize = 32;

fn profiles_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../profiles")
}

fn default_filter() -> CompiledFilter {
    let profile = seccomp::load_file(&profiles_dir().join("seccomp/default.json")).unwrap();
    seccomp::compile(&profile).unwrap()
}

fn filter_from(json: &str) -> CompiledFilter {
    let profile: LinuxSeccomp = serde_json::from_str(json).unwrap();
    seccomp::compile(&profile).unwrap()
}

/// Data the checks use, prepared before fork.
struct Ctx {
    file: CString,
    missing_dir: CString,
    tmpfs: CString,
}

impl Ctx {
    fn new(dir: &tempfile::TempDir) -> Ctx {
        let file = dir.path().join("file");
        std::fs::write(&file, b"hello").unwrap();
        let cstr = |p: PathBuf| CString::new(p.into_os_string().into_encoded_bytes()).unwrap();
        Ctx {
            file: cstr(file),
            missing_dir: cstr(dir.path().join("does-not-exist")),
            tmpfs: CString::new("tmpfs").unwrap(),
        }
    }
}

struct Check {
    name: &'static str,
    /// Returns 0 on success or the errno. Runs in the forked child.
    run: fn(&Ctx) -> i32,
    want: i32,
}

fn errno() -> i32 {
    // SAFETY: __errno_location returns this thread's errno slot, always valid to read.
    unsafe { *libc::__errno_location() }
}

/// 0 when a raw syscall return value means success, else errno.
fn outcome(ret: libc::c_long) -> i32 {
    if ret < 0 {
        errno()
    } else {
        0
    }
}

fn sys(nr: libc::c_long, a: [i64; 5]) -> i32 {
    // SAFETY: every call site passes integer arguments or pointers to data that lives for the
    // duration of the call (prepared before fork).
    outcome(unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4]) })
}

/// clone(2) used like fork: the grandchild exits at once, the child reaps it.
fn clone_and_reap(flags: i64) -> i32 {
    // SAFETY: raw clone without CLONE_VM and without a new stack behaves like fork; the new
    // process only calls _exit.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0, 0, 0, 0) };
    if pid == 0 {
        // SAFETY: _exit is async-signal-safe and never returns.
        unsafe { libc::_exit(7) };
    }
    if pid < 0 {
        return errno();
    }
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid status pointer.
    let rc = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, 0) };
    if rc != pid as libc::pid_t || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 7 {
        return 10_000; // not an errno: "the child did not run as expected"
    }
    0
}

fn pipe_roundtrip(_: &Ctx) -> i32 {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return errno();
    }
    let mut buf = [0u8; 4];
    // SAFETY: buffers are valid for the lengths given; fds are ours.
    let ok = unsafe {
        libc::write(fds[1], b"ping".as_ptr().cast(), 4) == 4
            && libc::read(fds[0], buf.as_mut_ptr().cast(), 4) == 4
    };
    let err = if ok && &buf == b"ping" {
        0
    } else {
        errno().max(1)
    };
    // SAFETY: closing our own fds.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    err
}

fn open_file(ctx: &Ctx) -> i32 {
    // SAFETY: a NUL-terminated path prepared before fork.
    let fd = unsafe { libc::open(ctx.file.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return errno();
    }
    let mut buf = [0u8; 5];
    // SAFETY: valid buffer and our own fd.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
    if n == 5 && &buf == b"hello" {
        0
    } else {
        10_001
    }
}

fn getpid(_: &Ctx) -> i32 {
    sys(libc::SYS_getpid, [0; 5])
}
fn fork_like_clone(_: &Ctx) -> i32 {
    clone_and_reap(libc::SIGCHLD as i64)
}
fn clone_newns(_: &Ctx) -> i32 {
    clone_and_reap((libc::CLONE_NEWNS | libc::SIGCHLD) as i64)
}
fn clone_newuser(_: &Ctx) -> i32 {
    clone_and_reap((libc::CLONE_NEWUSER | libc::SIGCHLD) as i64)
}
fn clone3_null(_: &Ctx) -> i32 {
    // Unfiltered this is EINVAL (size 0); the filter answers first.
    sys(libc::SYS_clone3, [0; 5])
}
fn unshare_user(_: &Ctx) -> i32 {
    sys(libc::SYS_unshare, [libc::CLONE_NEWUSER as i64, 0, 0, 0, 0])
}
fn mount_tmpfs(ctx: &Ctx) -> i32 {
    // Unfiltered: ENOENT (the target does not exist).
    let (src, target) = (ctx.tmpfs.as_ptr() as i64, ctx.missing_dir.as_ptr() as i64);
    sys(libc::SYS_mount, [src, target, src, 0, 0])
}
fn keyctl_session(_: &Ctx) -> i32 {
    const KEYCTL_GET_KEYRING_ID: i64 = 0;
    const KEY_SPEC_SESSION_KEYRING: i64 = -3;
    sys(
        libc::SYS_keyctl,
        [KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0, 0, 0],
    )
}
fn bpf_bad_cmd(_: &Ctx) -> i32 {
    // Unfiltered: EINVAL (no such command).
    sys(libc::SYS_bpf, [9999, 0, 0, 0, 0])
}
fn io_uring_setup(_: &Ctx) -> i32 {
    // Unfiltered: EINVAL or EFAULT.
    sys(libc::SYS_io_uring_setup, [0, 0, 0, 0, 0])
}
fn socket_vsock(_: &Ctx) -> i32 {
    sys(
        libc::SYS_socket,
        [AF_VSOCK, libc::SOCK_STREAM as i64, 0, 0, 0],
    )
}
fn socket_alg(_: &Ctx) -> i32 {
    sys(
        libc::SYS_socket,
        [AF_ALG, libc::SOCK_SEQPACKET as i64, 0, 0, 0],
    )
}
fn socket_unix(_: &Ctx) -> i32 {
    // SAFETY: plain socket creation; the fd is closed right away.
    let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return errno();
    }
    // SAFETY: closing our own fd.
    unsafe { libc::close(fd) };
    0
}
fn personality_exec(_: &Ctx) -> i32 {
    sys(libc::SYS_personality, [READ_IMPLIES_EXEC, 0, 0, 0, 0])
}
fn getcwd(_: &Ctx) -> i32 {
    let mut buf = [0u8; 256];
    sys(
        libc::SYS_getcwd,
        [buf.as_mut_ptr() as i64, buf.len() as i64, 0, 0, 0],
    )
}

/// ioctl `cmd` on a fresh pipe: ENOTTY for terminal requests without a filter.
fn ioctl_on_pipe(cmd: u64) -> i32 {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return errno();
    }
    let mut arg = [0u8; 8];
    let err = sys(
        libc::SYS_ioctl,
        [fds[0] as i64, cmd as i64, arg.as_mut_ptr() as i64, 0, 0],
    );
    // SAFETY: closing our own fds.
    unsafe {
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    err
}
fn ioctl_fionread(_: &Ctx) -> i32 {
    ioctl_on_pipe(libc::FIONREAD)
}
fn ioctl_tiocsti(_: &Ctx) -> i32 {
    ioctl_on_pipe(libc::TIOCSTI)
}
fn ioctl_tiocsti_high_bits(_: &Ctx) -> i32 {
    // The kernel only reads the low 32 bits of the command.
    ioctl_on_pipe(0x1_0000_0000 | libc::TIOCSTI)
}

/// Forks; the child installs `filters` and runs `checks`. Returns the child's errnos.
fn run_in_child(
    filters: &[&CompiledFilter],
    log_denials: bool,
    ctx: &Ctx,
    checks: &[Check],
) -> Vec<i32> {
    assert!(checks.len() <= MAX_CHECKS);
    let mut fds = [0; 2];
    // SAFETY: fds is a valid array of two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    let (read_end, write_end) = (fds[0], fds[1]);

    // SAFETY: the child below only makes async-signal-safe calls (raw syscalls, install,
    // which does not allocate, write, _exit) on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let mut results = [0i32; MAX_CHECKS];
        let status = match seccomp::install_all(filters, log_denials) {
            Ok(()) => {
                for (slot, check) in results.iter_mut().zip(checks) {
                    *slot = (check.run)(ctx);
                }
                0
            }
            Err(_) => 99,
        };
        let bytes = std::mem::size_of_val(&results);
        // SAFETY: writing our own array to our own pipe, then leaving without unwinding.
        unsafe {
            libc::write(write_end, results.as_ptr().cast(), bytes);
            libc::_exit(status);
        }
    }

    // SAFETY: closing the parent's copy of the write end.
    unsafe { libc::close(write_end) };
    let mut results = [0i32; MAX_CHECKS];
    let bytes = std::mem::size_of_val(&results);
    // SAFETY: reading into our own array of `bytes` bytes.
    let n = unsafe { libc::read(read_end, results.as_mut_ptr().cast(), bytes) };
    // SAFETY: closing our read end.
    unsafe { libc::close(read_end) };
    let mut status = 0;
    // SAFETY: waiting for the child we forked.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child failed (status {status:#x}; exit 99 = install failed)"
    );
    assert_eq!(n as usize, bytes, "short report from the child");
    results[..checks.len()].to_vec()
}

fn assert_checks(results: &[i32], checks: &[Check]) {
    let wrong: Vec<String> = checks
        .iter()
        .zip(results)
        .filter(|(c, got)| c.want != **got)
        .map(|(c, got)| format!("{}: want errno {} got {}", c.name, c.want, got))
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

macro_rules! check {
    ($f:ident, $want:expr) => {
        Check {
            name: stringify!($f),
            run: $f,
            want: $want,
        }
    };
}

#[test]
fn default_profile_allows_ordinary_calls_and_denies_the_dangerous_ones() {
    let filter = default_filter();
    let dir = tempfile::tempdir().unwrap();
    let ctx = Ctx::new(&dir);
    let checks = [
        check!(getpid, 0),
        check!(pipe_roundtrip, 0),
        check!(open_file, 0),
        check!(fork_like_clone, 0),
        check!(socket_unix, 0),
        check!(getcwd, 0),
        check!(unshare_user, libc::EPERM),
        check!(mount_tmpfs, libc::EPERM),
        check!(keyctl_session, libc::EPERM),
        check!(bpf_bad_cmd, libc::EPERM),
        check!(io_uring_setup, libc::EPERM),
        check!(socket_vsock, libc::EPERM),
        check!(socket_alg, libc::EPERM),
        check!(clone_newns, libc::EPERM),
        check!(clone_newuser, libc::EPERM),
        check!(personality_exec, libc::EPERM),
        check!(ioctl_fionread, 0),
        check!(ioctl_tiocsti, libc::EPERM),
        check!(ioctl_tiocsti_high_bits, libc::EPERM),
        check!(clone3_null, libc::ENOSYS),
    ];
    let results = run_in_child(&[&filter], false, &ctx, &checks);
    assert_checks(&results, &checks);
}

#[test]
fn without_the_filter_the_denied_calls_fail_differently() {
    // Guards the test above against passing vacuously: unfiltered, the probes do not give
    // the errnos the filter gives.
    let dir = tempfile::tempdir().unwrap();
    let ctx = Ctx::new(&dir);
    let checks = [
        check!(mount_tmpfs, libc::ENOENT),
        check!(bpf_bad_cmd, libc::EINVAL),
        check!(clone3_null, libc::EINVAL),
        check!(ioctl_tiocsti, libc::ENOTTY),
        check!(ioctl_tiocsti_high_bits, libc::ENOTTY),
        check!(getpid, 0),
    ];
    let results = run_in_child(&[], false, &ctx, &checks);
    assert_checks(&results, &checks);
}

#[test]
fn pod_profile_stacked_on_the_default_narrows_it() {
    let default = default_filter();
    let pod = filter_from(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["getcwd"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
            {"names":["mount","unshare"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let ctx = Ctx::new(&dir);
    let checks = [
        check!(getcwd, libc::EACCES),
        check!(mount_tmpfs, libc::EPERM),
        check!(unshare_user, libc::EPERM),
        check!(getpid, 0),
        check!(open_file, 0),
        check!(clone3_null, libc::ENOSYS),
    ];
    // With audit logging on, to exercise SECCOMP_FILTER_FLAG_LOG.
    let results = run_in_child(&[&default, &pod], true, &ctx, &checks);
    assert_checks(&results, &checks);
}

#[test]
fn kill_process_action_kills_with_sigsys() {
    let filter = filter_from(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["getcwd"],"action":"SCMP_ACT_KILL_PROCESS"}]}"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let ctx = Ctx::new(&dir);
    // SAFETY: the child only installs the filter and makes raw syscalls.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        if filter.install(false).is_ok() {
            getcwd(&ctx);
        }
        // SAFETY: leave without unwinding; reached only if the call was not killed.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child we forked.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGSYS,
        "status {status:#x}"
    );
}

#[test]
fn default_profile_leaves_room_for_a_pod_profile() {
    // The kernel refuses a filter once all stacked programs, plus 4 instructions each,
    // exceed MAX_INSNS_PER_PATH (32768). The default may use at most half of that.
    let filter = default_filter();
    let cost = filter.instruction_count() + 4 * filter.program_count();
    eprintln!("default profile: {cost} of 32768: {:?}", filter.describe());
    assert!(cost <= 32768 / 2, "{cost}");
}

/// Forks, installs `filter` with audit logging on, execs `argv`; returns the exit status.
fn exec_under(filter: &CompiledFilter, argv: &[&str]) -> i32 {
    let args: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
    let mut ptrs: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    ptrs.push(std::ptr::null());
    let env = [c"PATH=/usr/bin:/bin".as_ptr(), std::ptr::null()];
    // SAFETY: the child only installs the filter (no allocation) and execs prepared data.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0);
    if pid == 0 {
        if filter.install(true).is_ok() {
            // SAFETY: NUL-terminated strings and NULL-terminated arrays built before fork.
            unsafe { libc::execve(ptrs[0], ptrs.as_ptr(), env.as_ptr()) };
        }
        // SAFETY: leave without unwinding.
        unsafe { libc::_exit(127) };
    }
    let mut status = 0;
    // SAFETY: waiting for the child we forked.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    status
}

#[test]
fn real_programs_run_under_the_default_profile() {
    let filter = default_filter();
    // A static busybox shell: fork, exec, pipes, files.
    let status = exec_under(
        &filter,
        &["/bin/busybox", "sh", "-c", "/bin/busybox ls / | /bin/busybox grep -q proc && /bin/busybox cat /proc/self/status >/dev/null"],
    );
    assert_eq!(status, 0, "busybox: status {status:#x}");
    // A dynamically linked glibc program starting threads: glibc tries clone3 first and
    // must fall back to clone on ENOSYS; sockets of ordinary families work, AF_VSOCK not.
    let python = "/usr/bin/python3";
    if !std::path::Path::new(python).exists() {
        eprintln!("{python} not installed: threaded glibc check skipped");
        return;
    }
    let script = "import os, socket, threading\n\
        t = threading.Thread(target=os.getpid); t.start(); t.join()\n\
        socket.socket(socket.AF_INET, socket.SOCK_STREAM).close()\n\
        socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).close()\n\
        try:\n    socket.socket(40, socket.SOCK_STREAM)\n    raise SystemExit(3)\n\
        except PermissionError:\n    pass\n\
        os.listdir('/')\n";
    let status = exec_under(&filter, &[python, "-c", script]);
    assert_eq!(status, 0, "python3: status {status:#x}");
}
