//! The zygote: a single-threaded helper process forked before the tokio runtime starts.
//!
//! libcontainer clones from the calling process, runs allocating code in the child and
//! `chdir`s the whole process; none of that is safe inside a multi-threaded tokio process.
//! So the shim forks this helper first and sends it one request at a time over a
//! `SOCK_SEQPACKET` socketpair: one JSON message per packet, stdio fds attached with
//! `SCM_RIGHTS`. Every container is created with `as_sibling(true)`: its init and exec
//! processes become children of the shim (the zygote's parent), whose reaper reports
//! their exits. Large payloads (spec, process, seccomp plan) travel as files in the bundle.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context};
use async_trait::async_trait;
use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags,
    SockFlag, SockType,
};
use serde::{Deserialize, Serialize};

use super::container;
use super::{Launcher, Request, StdioMask};

/// Largest message either side sends; payloads that could be larger go through files.
const MAX_MESSAGE: usize = 64 * 1024;

#[derive(Debug, Serialize, Deserialize)]
struct Response {
    result: Result<Option<i32>, String>,
}

/// The shim's side of the zygote.
pub struct Zygote {
    /// Serializes request/response pairs; the zygote handles one at a time anyway.
    sock: Arc<Mutex<OwnedFd>>,
    pub pid: i32,
}

/// Fork the zygote. Must be called while the process is still single-threaded.
pub fn spawn(close_in_child: &[RawFd]) -> anyhow::Result<Zygote> {
    let (parent, child) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .context("creating the zygote socketpair")?;
    // SAFETY: the caller guarantees the process is single-threaded (main, before tokio
    // starts), so the child may run arbitrary code.
    match unsafe { nix::unistd::fork() }.context("forking the zygote")? {
        nix::unistd::ForkResult::Child => {
            drop(parent);
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
        nix::unistd::ForkResult::Parent { child: pid } => {
            drop(child);
            Ok(Zygote {
                sock: Arc::new(Mutex::new(parent)),
                pid: pid.as_raw(),
            })
        }
    }
}

/// Send one request with its fds and wait for the answer (blocking).
fn exchange(sock: &Mutex<OwnedFd>, req: &Request, fds: &[OwnedFd]) -> anyhow::Result<Option<i32>> {
    let sock = sock
        .lock()
        .map_err(|_| anyhow::anyhow!("zygote channel poisoned"))?;
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    send(sock.as_raw_fd(), req, &raw).context("sending to the zygote")?;
    let (resp, _): (Response, _) = recv(sock.as_raw_fd())
        .context("reading the zygote's answer")?
        .ok_or_else(|| anyhow::anyhow!("the zygote exited"))?;
    resp.result.map_err(anyhow::Error::msg)
}

#[async_trait]
impl Launcher for Zygote {
    /// Runs the blocking exchange on tokio's blocking pool.
    async fn call(&self, req: Request, fds: Vec<OwnedFd>) -> anyhow::Result<Option<i32>> {
        let sock = self.sock.clone();
        tokio::task::spawn_blocking(move || {
            let result = exchange(&sock, &req, &fds);
            crate::memory::trim();
            result
        })
        .await
        .context("zygote request task")?
    }

    fn helper_pid(&self) -> Option<i32> {
        Some(self.pid)
    }
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
    while let Some((req, fds)) = recv::<Request>(sock.as_raw_fd())? {
        let op = format!("{req:?}");
        let result = handle(req, fds).map_err(|e| format!("{e:#}"));
        if let Err(e) = &result {
            tracing::warn!(request = %op, error = %e, "zygote request failed");
        }
        send(sock.as_raw_fd(), &Response { result }, &[])?;
        crate::memory::trim();
    }
    Ok(())
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

fn handle(req: Request, fds: Vec<OwnedFd>) -> anyhow::Result<Option<i32>> {
    match req {
        Request::Mount {
            mounts,
            target,
            staging,
            range,
            userns,
        } => container::mount_rootfs(&mounts, &target, &staging, range, userns.as_deref())
            .map(|_| None),
        Request::Unmount { target, staging } => {
            container::unmount_rootfs(&target, &staging).map(|_| None)
        }
        Request::StageVolumes {
            volumes,
            staging,
            range,
            userns,
        } => container::stage_volumes(&volumes, &staging, range, userns.as_deref()).map(|_| None),
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
        .map(Some),
        Request::Start { id, root } => container::start(&id, &root).map(|_| None),
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
        .map(Some),
        Request::Kill {
            id,
            root,
            signal,
            all,
        } => container::kill(&id, &root, signal, all).map(|_| None),
        Request::Delete { id, root, force } => container::delete(&id, &root, force).map(|_| None),
        Request::Pause { id, root } => container::pause(&id, &root).map(|_| None),
        Request::Resume { id, root } => container::resume(&id, &root).map(|_| None),
    }
}
