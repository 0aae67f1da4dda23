//! Where the kernel's seccomp audit records are read from.
//!
//! - [`Netlink`]: the audit netlink multicast group (AUDIT_NLGRP_READLOG, needs
//!   CAP_AUDIT_READ). Every record, whether or not auditd runs, without the kernel log's
//!   rate limit. The default.
//! - [`Kmsg`]: /dev/kmsg. Without an audit daemon the kernel prints audit records there,
//!   but through printk's rate limit (kernel.printk_ratelimit{,_burst}: 10 per 5 s by
//!   default), so under load records are dropped.
//! - [`FileTail`]: auditd's log (/var/log/audit/audit.log), when auditd runs.
//!
//! Each source reads from "now" on: records from before the exporter started would name
//! pids that may have been reused since.

use crate::seccomp_log::{self, SeccompRecord, AUDIT_SECCOMP};
use crate::tail::LineTail;
use netlink_packet_audit::AuditMessage;
use netlink_packet_core::{NetlinkBuffer, NetlinkMessage, NetlinkPayload};
use nix::poll::{PollFd, PollFlags, PollTimeout};
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

/// How long a read may block, so the reader notices a shutdown.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// What a source returned from one read.
#[derive(Debug, Default)]
pub struct Batch {
    pub records: Vec<SeccompRecord>,
    /// Records the kernel dropped before we could read them (buffer overruns).
    pub lost: u64,
}

pub trait RecordSource: Send {
    /// Waits up to [`POLL_INTERVAL`] for records.
    fn read(&mut self) -> std::io::Result<Batch>;
    fn describe(&self) -> String;
}

/// AUDIT_NLGRP_READLOG from `<linux/audit.h>` (group 1: bit 0 of nl_groups).
const AUDIT_NLGRP_READLOG_MASK: u32 = 1;
/// The largest audit record the kernel sends (MAX_AUDIT_MESSAGE_LENGTH) fits many times.
const DATAGRAM_BUFFER: usize = 64 << 10;
/// NLMSG_HDRLEN from `<linux/netlink.h>`.
const NLMSG_HDRLEN: usize = 16;

/// The audit netlink multicast group, on netlink-sys; messages parsed by
/// netlink-packet-audit.
pub struct Netlink {
    socket: netlink_sys::Socket,
    buf: Vec<u8>,
}

impl Netlink {
    pub fn open() -> std::io::Result<Netlink> {
        let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_AUDIT)?;
        socket.bind(&netlink_sys::SocketAddr::new(0, AUDIT_NLGRP_READLOG_MASK))?;
        // A bigger buffer absorbs bursts of denials; failure only means the default size.
        socket.set_rx_buf_sz(4usize << 20).ok();
        socket.set_non_blocking(true)?;
        Ok(Netlink {
            socket,
            buf: Vec::with_capacity(DATAGRAM_BUFFER),
        })
    }
}

impl Netlink {
    /// Raises the receive buffer to `bytes` past net.core.rmem_max (SO_RCVBUFFORCE, needs
    /// CAP_NET_ADMIN): a recording gets a record per syscall, bursts the default buffer
    /// cannot absorb.
    pub fn force_rx_buffer(&self, bytes: usize) -> std::io::Result<()> {
        nix::sys::socket::setsockopt(&self.socket, nix::sys::socket::sockopt::RcvBufForce, &bytes)
            .map_err(std::io::Error::from)
    }
}

impl RecordSource for Netlink {
    fn read(&mut self) -> std::io::Result<Batch> {
        let mut batch = Batch::default();
        if !wait_readable(self.socket.as_fd(), POLL_INTERVAL)? {
            return Ok(batch);
        }
        loop {
            self.buf.clear();
            match self.socket.recv(&mut self.buf, 0) {
                Ok(_) => {
                    for body in seccomp_bodies(&self.buf) {
                        match seccomp_log::parse_body(body.trim_end_matches('\0')) {
                            Some(record) => batch.records.push(record),
                            None => tracing::debug!(%body, "unparsable seccomp audit record"),
                        }
                    }
                }
                Err(e) => match e.raw_os_error() {
                    Some(libc::EAGAIN) => break,
                    Some(libc::EINTR) => continue,
                    // The socket overflowed: how many records is unknown, at least one.
                    Some(libc::ENOBUFS) => batch.lost += 1,
                    _ => return Err(e),
                },
            }
        }
        Ok(batch)
    }

    fn describe(&self) -> String {
        "the audit netlink multicast group".into()
    }
}

/// The bodies of the AUDIT_SECCOMP records in a netlink datagram (other records and
/// malformed messages are skipped).
pub fn seccomp_bodies(mut data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while let Ok(header) = NetlinkBuffer::new_checked(data) {
        let len = header.length() as usize;
        if len < NLMSG_HDRLEN {
            break;
        }
        match NetlinkMessage::<AuditMessage>::deserialize(&data[..len]) {
            Ok(message) => {
                if let NetlinkPayload::InnerMessage(AuditMessage::Event((kind, body))) =
                    message.payload
                {
                    if kind == AUDIT_SECCOMP {
                        out.push(body);
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "malformed audit netlink message"),
        }
        // Messages in a datagram are 4-byte aligned (NLMSG_ALIGN).
        data = data.get((len + 3) & !3..).unwrap_or(&[]);
    }
    out
}

/// /dev/kmsg from its current end.
pub struct Kmsg {
    file: std::fs::File,
    buf: Vec<u8>,
}

impl Kmsg {
    pub fn open(path: &Path) -> std::io::Result<Kmsg> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)?;
        file.seek(SeekFrom::End(0))?;
        Ok(Kmsg {
            file,
            buf: vec![0; 16 << 10],
        })
    }
}

impl RecordSource for Kmsg {
    fn read(&mut self) -> std::io::Result<Batch> {
        let mut batch = Batch::default();
        if !wait_readable(self.file.as_fd(), POLL_INTERVAL)? {
            return Ok(batch);
        }
        // Each read(2) returns exactly one kernel log record.
        loop {
            match self.file.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => {
                    let line = String::from_utf8_lossy(&self.buf[..n]);
                    if let Some(record) = seccomp_log::parse_line(&line) {
                        batch.records.push(record);
                    }
                }
                // The ring buffer overwrote records we had not read yet.
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => batch.lost += 1,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        Ok(batch)
    }

    fn describe(&self) -> String {
        "the kernel log (/dev/kmsg)".into()
    }
}

/// Whether `fd` became readable within `timeout` (false on a signal, too).
fn wait_readable(fd: BorrowedFd<'_>, timeout: Duration) -> std::io::Result<bool> {
    let timeout = PollTimeout::try_from(timeout).unwrap_or(PollTimeout::MAX);
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match nix::poll::poll(&mut fds, timeout) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// A log file (auditd's) followed from its end; a rotated file is read from its start.
pub struct FileTail {
    lines: LineTail,
}

impl FileTail {
    pub fn open(path: &Path) -> std::io::Result<FileTail> {
        Ok(FileTail {
            lines: LineTail::from_end(path)?,
        })
    }

    fn read_new(&mut self, batch: &mut Batch) -> std::io::Result<()> {
        self.lines.poll(|line| {
            if let Some(r) = seccomp_log::parse_line(line) {
                batch.records.push(r);
            }
        })
    }
}

impl RecordSource for FileTail {
    fn read(&mut self) -> std::io::Result<Batch> {
        let mut batch = Batch::default();
        self.read_new(&mut batch)?;
        if batch.records.is_empty() {
            std::thread::sleep(POLL_INTERVAL);
        }
        Ok(batch)
    }

    fn describe(&self) -> String {
        format!("the audit log {}", self.lines.path().display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn message(kind: u16, body: &[u8]) -> Vec<u8> {
        let len = NLMSG_HDRLEN + body.len();
        let mut m = Vec::new();
        m.extend_from_slice(&(len as u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(body);
        while m.len() % 4 != 0 {
            m.push(0);
        }
        m
    }

    #[test]
    fn picks_seccomp_records_from_netlink_datagrams() {
        // AUDIT_SYSCALL (1300), then a seccomp record, then garbage.
        let mut data = message(1300, b"audit(1.2:3): arch=c000003e syscall=1");
        data.extend(message(AUDIT_SECCOMP, b"audit(1.2:3): pid=7 syscall=250"));
        data.extend(message(AUDIT_SECCOMP, b"audit(1.2:4): pid=8"));
        data.extend_from_slice(&[1, 2, 3]);
        assert_eq!(
            seccomp_bodies(&data),
            ["audit(1.2:3): pid=7 syscall=250", "audit(1.2:4): pid=8"]
        );
        // A length field past the end of the datagram ends the walk.
        let mut short = message(AUDIT_SECCOMP, b"audit(1.2:5): pid=9");
        short[0] = 200;
        assert!(seccomp_bodies(&short).is_empty());
        assert!(seccomp_bodies(&[]).is_empty());
    }

    #[test]
    fn file_tail_reads_only_new_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.log");
        let line = |pid: u32| {
            format!(
                "type=SECCOMP msg=audit(1.1:1): pid={pid} arch=c000003e syscall=250 code=0x50000\n"
            )
        };
        std::fs::write(&path, line(1)).unwrap();
        let mut tail = FileTail::open(&path).unwrap();
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        write!(f, "type=SYSCALL msg=audit(1.1:2): pid=3\n{}", line(2)).unwrap();
        let batch = tail.read().unwrap();
        assert_eq!(batch.records.iter().map(|r| r.pid).collect::<Vec<_>>(), [2]);
        // Rotation: the new file is read from its start.
        std::fs::rename(&path, dir.path().join("audit.log.1")).unwrap();
        std::fs::write(&path, line(5)).unwrap();
        let batch = tail.read().unwrap();
        assert_eq!(batch.records.iter().map(|r| r.pid).collect::<Vec<_>>(), [5]);
    }
}
