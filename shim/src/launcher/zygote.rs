//! The zygote: the single-threaded helper process that runs libcontainer for the shim.
//!
//! libcontainer clones from the calling process, runs allocating code in the child and
//! `chdir`s the whole process; none of that is safe inside a multi-threaded tokio process.
//! So the shim has this helper do it, one request at a time over a `SOCK_SEQPACKET`
//! socketpair: one JSON message per packet, stdio fds attached with `SCM_RIGHTS`. Every
//! container is created with `as_sibling(true)`: its init and exec processes become
//! children of the shim (the zygote's parent), whose reaper reports their exits. Large
//! payloads (spec, process, seccomp plan) travel as files in the bundle.
//!
//! The first zygote is forked before the shim's runtime starts; one the shim starts later
//! (its zygote idled out, see [`super::handle`]) is this binary exec'd afresh with the
//! [`ACTION`] action and the socket as fd 3 ([`run_exec`]).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{bail, Context};
use nix::sys::socket::{
    getsockopt, recvmsg, sendmsg, socketpair, sockopt, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use serde::{Deserialize, Serialize};

use super::container;
use super::{Request, StdioMask};

/// Largest message either side sends; payloads that could be larger go through files.
const MAX_MESSAGE: usize = 64 * 1024;

/// The shim's action for an exec'd zygote (never one containerd runs).
pub const ACTION: &str = "zygote";

/// Where an exec'd zygote finds its socket.
pub const SOCKET_FD: RawFd = 3;

#[derive(Debug, Serialize, Deserialize)]
struct Response {
    result: Result<Option<i32>, String>,
}

/// The zygote's answer to one request, or why there was none: the channel failed (the
/// zygote is gone or unusable, a new one is needed).
pub(super) type Answer = Result<Result<Option<i32>, String>, anyhow::Error>;

/// A socketpair for a zygote: (the shim's end, the zygote's end), both close-on-exec.
pub(super) fn socketpair_for_zygote() -> anyhow::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context("creating the zygote socketpair")
}

/// Fork a zygote serving `child`; returns its pid. Must be called while the process is
/// still single-threaded.
pub(super) fn fork(
    child: OwnedFd,
    parent: &OwnedFd,
    close_in_child: &[RawFd],
) -> anyhow::Result<i32> {
    // SAFETY: the caller guarantees the process is single-threaded (main, before tokio
    // starts), so the child may run arbitrary code.
    match unsafe { nix::unistd::fork() }.context("forking the zygote")? {
        nix::unistd::ForkResult::Child => {
            let _ = nix::unistd::close(parent.as_raw_fd());
            for fd in close_in_child {
                let _ = nix::unistd::close(*fd);
            }
            // SAFETY: prctl with integer arguments only.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                libc::prctl(libc::PR_SET_NAME, c"stockade-zygote".as_ptr());
            }
            let code = match serve(child) {
                Ok(()) => 0,
                Err(e) => {
                    tracing::error!(error = %format!("{e:#}"), "zygote failed");
                    1
                }
            };
            std::process::exit(code);
        }
        nix::unistd::ForkResult::Parent { child: pid } => Ok(pid.as_raw()),
    }
}

/// The [`ACTION`] action: serve the socket at fd 3 until the shim closes it. The shim's
/// exit closes it too (an exec'd zygote has no parent-death signal: that would follow the
/// shim thread that started it, which the blocking pool ends when idle).
pub fn run_exec(debug: bool) -> anyhow::Result<()> {
    // SAFETY: fd 3 is only borrowed here, to be checked before it is owned below.
    let borrowed = unsafe { BorrowedFd::borrow_raw(SOCKET_FD) };
    check_socket(borrowed).with_context(|| {
        format!("the {ACTION} action serves only the shim's socket at fd {SOCKET_FD}")
    })?;
    // SAFETY: fd 3 is the socket the shim passed, checked above; nothing else owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(SOCKET_FD) };
    nix::fcntl::fcntl(
        sock.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .context("marking the zygote socket close-on-exec")?;
    crate::memory::limit_arenas();
    crate::logging::init_zygote(debug);
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"stockade-zygote".as_ptr()) };
    serve(sock)
}

/// `fd` is a unix `SOCK_SEQPACKET` socket.
fn check_socket(fd: BorrowedFd<'_>) -> anyhow::Result<()> {
    let kind = getsockopt(&fd, sockopt::SockType).context("not a socket")?;
    if kind != SockType::SeqPacket {
        bail!("a {kind:?} socket, not a SOCK_SEQPACKET one");
    }
    Ok(())
}

/// Send one request with its fds and wait for the answer (blocking).
pub(super) fn exchange(sock: &OwnedFd, req: &Request, fds: &[OwnedFd]) -> Answer {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    send(sock.as_raw_fd(), req, &raw).context("sending to the zygote")?;
    let (resp, _): (Response, _) = recv(sock.as_fd().as_raw_fd())
        .context("reading the zygote's answer")?
        .ok_or_else(|| anyhow::anyhow!("the zygote exited"))?;
    Ok(resp.result)
}

fn send<T: Serialize>(fd: RawFd, msg: &T, fds: &[RawFd]) -> anyhow::Result<()> {
    let buf = serde_json::to_vec(msg)?;
    if buf.len() > MAX_MESSAGE {
        bail!("zygote message of {} bytes is too large", buf.len());
    }
    let iov = [IoSlice::new(&buf)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    sendmsg::<()>(fd, &iov, cmsgs, MsgFlags::empty(), None)?;
    Ok(())
}

/// Receive one message; `None` on EOF.
fn recv<T: for<'de> Deserialize<'de>>(fd: RawFd) -> anyhow::Result<Option<(T, Vec<OwnedFd>)>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let mut cspace = nix::cmsg_space!([RawFd; 3]);
    let (len, fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = loop {
            match recvmsg::<()>(fd, &mut iov, Some(&mut cspace), MsgFlags::MSG_CMSG_CLOEXEC) {
                Err(nix::errno::Errno::EINTR) => continue,
                other => break other?,
            }
        };
        let mut fds = Vec::new();
        for c in msg.cmsgs()? {
            if let ControlMessageOwned::ScmRights(raw) = c {
                for r in raw {
                    // SAFETY: SCM_RIGHTS handed us a new fd that nothing else owns.
                    fds.push(unsafe { OwnedFd::from_raw_fd(r) });
                }
            }
        }
        (msg.bytes, fds)
    };
    if len == 0 {
        return Ok(None);
    }
    let value = serde_json::from_slice(&buf[..len]).context("decoding zygote message")?;
    Ok(Some((value, fds)))
}

/// The zygote's loop: one request, one answer, until the shim closes its end.
fn serve(sock: OwnedFd) -> anyhow::Result<()> {
    super::lean_ns::prepare();
    probe_cpu_features();
    while let Some((req, fds)) = recv::<Request>(sock.as_raw_fd())? {
        let op = format!("{req:?}");
        let (result, after) = match handle(req, fds) {
            Ok(Handled::Done(pid)) => (Ok(pid), None),
            Ok(Handled::Created(pid, after)) => (Ok(Some(pid)), Some(after)),
            Err(e) => (Err(format!("{e:#}")), None),
        };
        if let Err(e) = &result {
            tracing::warn!(request = %op, error = %e, "zygote request failed");
        }
        let sent = send(sock.as_raw_fd(), &Response { result }, &[]);
        // Before the next request is read, whether or not the answer got through.
        if let Some(after) = after {
            after.run();
        }
        sent?;
        trim_unless_asked(sock.as_fd());
    }
    Ok(())
}

/// How long the zygote waits for a next request before it trims its heap.
const TRIM_AFTER_MS: u16 = 20;

/// Trims the heap (smaller, the next fork copies less) unless the shim's next request
/// comes within [`TRIM_AFTER_MS`]: a Create's four requests follow each other closely, and
/// the trim and the page faults after it would lengthen each.
fn trim_unless_asked(sock: BorrowedFd<'_>) {
    let mut fds = [nix::poll::PollFd::new(sock, nix::poll::PollFlags::POLLIN)];
    if matches!(nix::poll::poll(&mut fds, TRIM_AFTER_MS), Ok(0)) {
        crate::memory::trim();
    }
}

/// std and memchr find out what the CPU can do (`cpuid`) the first time a process needs
/// it and keep the answer in the process's memory. Asked here, the answer is inherited by
/// every process libcontainer forks from the zygote; otherwise each container's init asks
/// again (libpathrs splits paths with memchr's `memrchr`). Under a hypervisor every
/// `cpuid` traps: 7 µs each on this project's VMs, about 0.1 ms per container.
fn probe_cpu_features() {
    #[cfg(target_arch = "x86_64")]
    let _ = std::hint::black_box(std::arch::is_x86_feature_detected!("avx2"));
    let path = std::hint::black_box(b"/probe/path".as_slice());
    let _ = std::hint::black_box(memchr::memrchr(b'/', path));
}

/// Split the fds of a request by its stdio mask.
fn stdio_fds(mask: StdioMask, fds: Vec<OwnedFd>) -> anyhow::Result<[Option<OwnedFd>; 3]> {
    let mut it = fds.into_iter();
    let mut out: [Option<OwnedFd>; 3] = [None, None, None];
    for (slot, present) in out.iter_mut().zip(mask) {
        if present {
            *slot = Some(it.next().context("a stdio fd is missing")?);
        }
    }
    Ok(out)
}

/// A request served: the pid it started, if any; a Create also leaves work for after its
/// answer ([`container::AfterCreate`]).
enum Handled {
    Done(Option<i32>),
    Created(i32, container::AfterCreate),
}

/// A request that starts no process.
fn done<T>(result: anyhow::Result<T>) -> anyhow::Result<Handled> {
    result.map(|_| Handled::Done(None))
}

fn handle(req: Request, fds: Vec<OwnedFd>) -> anyhow::Result<Handled> {
    match req {
        Request::Mount {
            mounts,
            target,
            staging,
            range,
            userns,
        } => done(container::mount_rootfs(
            &mounts,
            &target,
            &staging,
            range,
            userns.as_deref(),
        )),
        Request::Unmount { target, staging } => done(container::unmount_rootfs(&target, &staging)),
        Request::StageVolumes {
            volumes,
            staging,
            range,
            userns,
        } => done(container::stage_volumes(
            &volumes,
            &staging,
            range,
            userns.as_deref(),
        )),
        Request::Create {
            id,
            root,
            bundle,
            console_socket,
            seccomp,
            stdio,
            netns,
            sysctls,
        } => container::create(
            &id,
            &root,
            &bundle,
            console_socket,
            &seccomp,
            stdio_fds(stdio, fds)?,
            netns.as_deref(),
            &sysctls,
        )
        .map(|(pid, after)| Handled::Created(pid, after)),
        Request::Start { id, root } => done(container::start(&id, &root)),
        Request::Exec {
            id,
            root,
            process,
            console_socket,
            seccomp,
            stdio,
        } => container::exec(
            &id,
            &root,
            &process,
            console_socket,
            &seccomp,
            stdio_fds(stdio, fds)?,
        )
        .map(|pid| Handled::Done(Some(pid))),
        Request::Kill {
            id,
            root,
            signal,
            all,
        } => done(container::kill(&id, &root, signal, all)),
        Request::Delete { id, root, force } => done(container::delete(&id, &root, force)),
        Request::Pause { id, root } => done(container::pause(&id, &root)),
        Request::Resume { id, root } => done(container::resume(&id, &root)),
    }
}
