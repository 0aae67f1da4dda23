//! Process stdio: containerd's fifos (or `file://` log URIs), and the console socket that
//! receives a TTY process's pty master.
//!
//! Without a TTY the fifos are opened here and their fds handed straight to the process
//! (through the zygote): the shim holds no copy loop, and no writer end of stdin, so
//! containerd closing its side is what the process sees. With a TTY libcontainer sends
//! the pty master over a unix socket; the shim copies master → stdout fifo and
//! stdin fifo → master on two blocking threads.

use std::fs::{File, OpenOptions};
use std::io::{IoSliceMut, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{anyhow, Context};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use tokio::sync::watch;

use crate::launcher::StdioMask;

/// How long to wait for containerd to open its end of a fifo.
const FIFO_OPEN_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a TTY's last output may wait in the fifo for the client to read it.
const READ_TIMEOUT: Duration = Duration::from_millis(1500);
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Open a path for the process to write to: a fifo (blocks until containerd reads it),
/// or a `file://` URI.
async fn open_output(path: &str) -> anyhow::Result<OwnedFd> {
    if let Some(file) = path.strip_prefix("file://") {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(file)
            .with_context(|| format!("opening log file {file}"))?;
        return Ok(f.into());
    }
    if path.contains("://") {
        return Err(anyhow!(
            "unsupported stdio URI {path:?} (only fifos and file://)"
        ));
    }
    open_blocking(path.to_string()).await
}

/// Open a fifo for writing: blocks until containerd's reader is there (bounded).
async fn open_blocking(path: String) -> anyhow::Result<OwnedFd> {
    let p = path.clone();
    let task = tokio::task::spawn_blocking(move || {
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&p)
            .map(OwnedFd::from)
    });
    match tokio::time::timeout(FIFO_OPEN_TIMEOUT, task).await {
        Ok(joined) => Ok(joined
            .context("fifo open task")?
            .with_context(|| format!("opening fifo {path}"))?),
        Err(_) => {
            // Unblock the thread: opening the read end completes its open.
            let _ = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&path);
            Err(anyhow!(
                "timed out opening fifo {path}: containerd never opened its end"
            ))
        }
    }
}

/// Open the stdin fifo for reading without waiting for a writer (like runc's shim): a
/// client that attaches stdin has its writer open pending already and connects now; one
/// that does not (e.g. `ctr run` without `-i`) gives the process EOF at its first read.
fn open_stdin(path: &str) -> anyhow::Result<OwnedFd> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("opening fifo {path}"))?;
    // The process reads with blocking semantics.
    // SAFETY: F_SETFL on an fd we own, with flags read from it just before.
    unsafe {
        let flags = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        if flags < 0 || libc::fcntl(f.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK) < 0 {
            return Err(std::io::Error::last_os_error()).context("clearing O_NONBLOCK on stdin");
        }
    }
    Ok(f.into())
}

/// Open the fds a non-TTY process gets; returns which ones are present.
pub async fn open_direct(paths: &StdioPaths) -> anyhow::Result<(StdioMask, Vec<OwnedFd>)> {
    let mut mask = [false; 3];
    let mut fds = Vec::new();
    if !paths.stdin.is_empty() {
        fds.push(open_stdin(&paths.stdin)?);
        mask[0] = true;
    }
    for (i, p) in [(1, &paths.stdout), (2, &paths.stderr)] {
        if !p.is_empty() {
            fds.push(open_output(p).await?);
            mask[i] = true;
        }
    }
    Ok((mask, fds))
}

/// A listening console socket for one TTY process.
pub struct ConsoleSocket {
    pub path: PathBuf,
    listener: tokio::net::UnixListener,
}

impl ConsoleSocket {
    /// A socket in `dir` (short: a unix socket path has 108 bytes).
    pub fn new(dir: &Path) -> anyhow::Result<Self> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join(format!(
            "{}-{}.sock",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_file(&path);
        let listener = tokio::net::UnixListener::bind(&path)
            .with_context(|| format!("binding console socket {}", path.display()))?;
        Ok(ConsoleSocket { path, listener })
    }

    /// Wait for libcontainer to connect and send the pty master.
    pub async fn receive_master(self) -> anyhow::Result<OwnedFd> {
        let result = async {
            let (stream, _) = self.listener.accept().await.context("console accept")?;
            let stream = stream.into_std().context("console stream")?;
            stream.set_nonblocking(false)?;
            tokio::task::spawn_blocking(move || recv_fd(stream.as_raw_fd()))
                .await
                .context("console receive task")?
        }
        .await;
        let _ = std::fs::remove_file(&self.path);
        result
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn recv_fd(sock: RawFd) -> anyhow::Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut cspace = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock,
        &mut iov,
        Some(&mut cspace),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .context("receiving the pty master")?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            if let Some(fd) = fds.first() {
                // SAFETY: SCM_RIGHTS handed us a new fd nothing else owns.
                return Ok(unsafe { OwnedFd::from_raw_fd(*fd) });
            }
        }
    }
    Err(anyhow!("the console socket message carried no fd"))
}

/// A TTY process's pty master and its copy threads.
pub struct Console {
    pub master: File,
    /// Becomes true once everything the process wrote reached the stdout fifo.
    pub drained: watch::Receiver<bool>,
}

/// The fifos of a TTY process, opened before the process runs (as [`open_direct`] does
/// without a TTY). containerd's client gives up a fifo reader whose open it has not seen
/// complete when it deletes the exited process (`ctr exec -t` lost a fast process's output
/// that way, 7% of the time under load, when the fifo was opened only after the process
/// had run). Opened first, the reader is connected long before any exit.
pub struct ConsoleIo {
    out: Option<File>,
    input: Option<File>,
}

impl ConsoleIo {
    pub async fn open(paths: &StdioPaths) -> anyhow::Result<ConsoleIo> {
        let input = if paths.stdin.is_empty() {
            None
        } else {
            Some(File::from(open_stdin(&paths.stdin)?))
        };
        let out = if paths.stdout.is_empty() {
            None
        } else {
            Some(File::from(open_output(&paths.stdout).await?))
        };
        Ok(ConsoleIo { out, input })
    }
}

impl Console {
    /// Copy between the pty master and the process's fifos on two threads.
    pub fn start(master: OwnedFd, io: ConsoleIo) -> anyhow::Result<Console> {
        let master = File::from(master);
        let (tx, rx) = watch::channel(false);
        if let Some(out) = io.out {
            let reader = master.try_clone().context("duplicating the pty master")?;
            std::thread::spawn(move || {
                copy_until_closed(reader, &out);
                wait_until_read(&out, READ_TIMEOUT);
                drop(out);
                let _ = tx.send(true);
            });
        } else {
            let _ = tx.send(true);
        }
        if let Some(input) = io.input {
            let writer = master.try_clone().context("duplicating the pty master")?;
            std::thread::spawn(move || copy_until_closed(input, &writer));
        }
        Ok(Console {
            master,
            drained: rx,
        })
    }

    pub fn resize(&self, width: u32, height: u32) -> anyhow::Result<()> {
        let ws = libc::winsize {
            ws_row: u16::try_from(height).unwrap_or(u16::MAX),
            ws_col: u16::try_from(width).unwrap_or(u16::MAX),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a winsize struct that lives for the call.
        let rc = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error()).context("resizing the pty");
        }
        Ok(())
    }
}

/// Copy until EOF or an error (a pty master reads EIO once the last slave closes).
fn copy_until_closed(mut from: File, mut to: &File) {
    let mut buf = [0u8; 32 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return,
        }
    }
}

/// Wait until the reader has taken everything written to the fifo `out`, its reader is
/// gone, or `timeout` passed. containerd's client (2.x) closes its reader as soon as it
/// deletes an exited process, dropping what it had not read yet (`ctr exec -t` under
/// runc's shim lost 1 in 200 outputs so on two busy cores): the exit is published, and
/// Wait answered, only once the output has left the pipe.
fn wait_until_read(out: &File, timeout: Duration) {
    let read = crate::poll::poll_until(timeout, || unread_bytes(out) == 0 || !has_reader(out));
    if !read {
        tracing::debug!(
            pending = unread_bytes(out),
            "a TTY's last output was not read in time"
        );
    }
}

/// Bytes written to a pipe and not read yet (0 when it cannot be told).
fn unread_bytes(out: &File) -> libc::c_int {
    let mut pending: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int, which lives for the call.
    let rc = unsafe { libc::ioctl(out.as_raw_fd(), libc::FIONREAD, &mut pending) };
    if rc < 0 {
        0
    } else {
        pending
    }
}

/// Whether a fifo's write end still has a reader (a pipe without one polls POLLERR).
fn has_reader(out: &File) -> bool {
    let mut fds = [libc::pollfd {
        fd: out.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    }];
    // SAFETY: poll reads and writes the one pollfd of the array, which lives for the call.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), 1, 0) };
    rc >= 0 && fds[0].revents & libc::POLLERR == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn pipe() -> (File, File) {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        (File::from(r), File::from(w))
    }

    #[test]
    fn waits_until_the_reader_took_the_output() {
        let (mut r, mut w) = pipe();
        w.write_all(b"/dev/pts/0\r\n").expect("write");
        let reader = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let mut buf = [0u8; 64];
            let n = r.read(&mut buf).expect("read");
            (Instant::now(), n, r)
        });
        wait_until_read(&w, Duration::from_secs(5));
        let returned = Instant::now();
        let (read_at, n, _r) = reader.join().expect("reader");
        assert_eq!(n, 12);
        assert!(returned >= read_at, "returned before the reader read");
    }

    #[test]
    fn a_gone_reader_or_the_timeout_ends_the_wait() {
        let (r, mut w) = pipe();
        w.write_all(b"unread").expect("write");
        let t = Instant::now();
        wait_until_read(&w, Duration::from_millis(100));
        assert!(t.elapsed() >= Duration::from_millis(100));
        assert!(has_reader(&w));
        drop(r);
        assert!(!has_reader(&w));
        let t = Instant::now();
        wait_until_read(&w, Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_secs(1));
    }
}
