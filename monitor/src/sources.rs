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
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
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

/// NETLINK_AUDIT from `<linux/netlink.h>`.
const NETLINK_AUDIT: libc::c_int = 9;
/// AUDIT_NLGRP_READLOG from `<linux/audit.h>` (group 1: bit 0 of nl_groups).
const AUDIT_NLGRP_READLOG_MASK: u32 = 1;
const NLMSG_HDRLEN: usize = 16;

pub struct Netlink {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl Netlink {
    pub fn open() -> std::io::Result<Netlink> {
        // SAFETY: plain socket(2) call; the returned fd is checked and then owned.
        let raw = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                NETLINK_AUDIT,
            )
        };
        if raw < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid fd nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: an all-zero sockaddr_nl is valid; the fields that matter are set below.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        addr.nl_groups = AUDIT_NLGRP_READLOG_MASK;
        // SAFETY: `addr` is a valid sockaddr_nl and the length is its size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const libc::sockaddr_nl as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // A bigger buffer absorbs bursts of denials; failure only means the default size.
        let size: libc::c_int = 4 << 20;
        set_sockopt(&fd, libc::SO_RCVBUF, &size).ok();
        let timeout = libc::timeval {
            tv_sec: 0,
            tv_usec: POLL_INTERVAL.as_micros() as libc::suseconds_t,
        };
        set_sockopt(&fd, libc::SO_RCVTIMEO, &timeout)?;
        Ok(Netlink {
            fd,
            buf: vec![0; 64 << 10],
        })
    }
}

fn set_sockopt<T>(fd: &OwnedFd, option: libc::c_int, value: &T) -> std::io::Result<()> {
    // SAFETY: `value` points at a live T whose size is passed along.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            value as *const T as *const libc::c_void,
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl RecordSource for Netlink {
    fn read(&mut self) -> std::io::Result<Batch> {
        let mut batch = Batch::default();
        // SAFETY: `buf` is a live, writable buffer of the length passed.
        let n = unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                self.buf.as_mut_ptr() as *mut libc::c_void,
                self.buf.len(),
                0,
            )
        };
        if n < 0 {
            let err = std::io::Error::last_os_error();
            return match err.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(batch),
                Some(libc::ENOBUFS) => {
                    // The socket overflowed: how many records is unknown, at least one.
                    batch.lost = 1;
                    Ok(batch)
                }
                _ => Err(err),
            };
        }
        for (kind, body) in netlink_messages(&self.buf[..n as usize]) {
            if kind == AUDIT_SECCOMP {
                let text = String::from_utf8_lossy(body);
                match seccomp_log::parse_body(text.trim_end_matches('\0')) {
                    Some(record) => batch.records.push(record),
                    None => tracing::debug!(body = %text, "unparsable seccomp audit record"),
                }
            }
        }
        Ok(batch)
    }

    fn describe(&self) -> String {
        "the audit netlink multicast group".into()
    }
}

/// Splits a netlink datagram into (type, payload) messages.
pub fn netlink_messages(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([data[0], data[1], data[2], data[3]]) as usize;
        let kind = u16::from_ne_bytes([data[4], data[5]]);
        if len < NLMSG_HDRLEN || len > data.len() {
            break;
        }
        out.push((kind, &data[NLMSG_HDRLEN..len]));
        let aligned = (len + 3) & !3;
        data = data.get(aligned..).unwrap_or(&[]);
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
        if !wait_readable(&self.file, POLL_INTERVAL)? {
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

fn wait_readable(file: &std::fs::File, timeout: Duration) -> std::io::Result<bool> {
    let mut pfd = libc::pollfd {
        fd: file.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, count 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as libc::c_int) };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(err);
    }
    Ok(rc > 0)
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
    fn splits_netlink_datagrams() {
        let mut data = message(1300, b"abc");
        data.extend(message(AUDIT_SECCOMP, b"audit(1.2:3): pid=7"));
        data.extend_from_slice(&[1, 2, 3]); // trailing garbage
        let msgs = netlink_messages(&data);
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0], (1300, &b"abc"[..]));
        assert_eq!(msgs[1].0, AUDIT_SECCOMP);
        assert_eq!(msgs[1].1, b"audit(1.2:3): pid=7");
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
