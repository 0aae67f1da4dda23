//! The kernel audit subsystem's status (AUDIT_GET over NETLINK_AUDIT, needs
//! CAP_AUDIT_CONTROL): its `lost` counter says how many records the kernel dropped,
//! node-wide, for a recording to report.

use netlink_packet_audit::{AuditMessage, StatusMessage};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_REQUEST,
};
use std::time::{Duration, Instant};

/// What a recording reports of the kernel's audit state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct AuditStatus {
    /// Records the kernel dropped since boot (backlog full, hold queue full, rate limit).
    pub lost: u32,
    /// audit_backlog_limit (0: none).
    pub backlog_limit: u32,
    /// Messages per second before the kernel drops (0: no limit).
    pub rate_limit: u32,
    /// auditd's pid (0: none runs).
    pub auditd_pid: u32,
}

/// Asks the kernel for its audit status.
pub fn read() -> std::io::Result<AuditStatus> {
    let mut socket = netlink_sys::Socket::new(netlink_sys::protocols::NETLINK_AUDIT)?;
    socket.bind_auto()?;
    socket.connect(&netlink_sys::SocketAddr::new(0, 0))?;
    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_REQUEST | NLM_F_ACK;
    header.sequence_number = 1;
    let mut request = NetlinkMessage::new(
        header,
        NetlinkPayload::InnerMessage(AuditMessage::GetStatus(None)),
    );
    request.finalize();
    let mut buf = vec![0u8; request.buffer_len()];
    request.serialize(&mut buf);
    socket.send(&buf, 0)?;

    let deadline = Instant::now() + Duration::from_secs(2);
    socket.set_non_blocking(true)?;
    let mut reply = Vec::with_capacity(8192);
    while Instant::now() < deadline {
        reply.clear();
        match socket.recv(&mut reply, 0) {
            Ok(_) => {
                if let Some(status) = parse_reply(&reply)? {
                    return Ok(status);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no AUDIT_GET reply from the kernel",
    ))
}

fn parse_reply(data: &[u8]) -> std::io::Result<Option<AuditStatus>> {
    let message = NetlinkMessage::<AuditMessage>::deserialize(data)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    match message.payload {
        NetlinkPayload::InnerMessage(AuditMessage::GetStatus(Some(s))) => Ok(Some(of(&s))),
        NetlinkPayload::Error(e) if e.code.is_some() => Err(e.to_io()),
        _ => Ok(None),
    }
}

fn of(s: &StatusMessage) -> AuditStatus {
    AuditStatus {
        lost: s.lost,
        backlog_limit: s.backlog_limit,
        rate_limit: s.rate_limiting,
        auditd_pid: s.pid,
    }
}
