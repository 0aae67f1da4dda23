//! Parsing the kernel's seccomp audit records (type 1326, AUDIT_SECCOMP). Pure.
//!
//! The same record reaches us in three shapes:
//! - netlink (the audit multicast group): `audit(1795713797.180:10): auid=... pid=517 ...`
//!   with the type in the netlink header;
//! - the kernel log (/dev/kmsg, when no audit daemon runs):
//!   `6,1234,1244151726,-;audit: type=1326 audit(...): auid=... pid=517 ...`;
//! - auditd's log: `type=SECCOMP msg=audit(...): auid=... pid=517 ... code=0x50000` with,
//!   in auditd's "enriched" format, interpreted fields after a 0x1d byte.

use std::str::FromStr;

/// The audit record type of seccomp actions (1326, from `<linux/audit.h>`).
pub use netlink_packet_audit::constants::AUDIT_SECCOMP;

const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;
const AUDIT_ARCH_I386: u32 = 0x4000_0003;
const AUDIT_ARCH_ARM: u32 = 0x4000_0028;

/// One seccomp audit record, the fields the exporter uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeccompRecord {
    /// The process (thread group) as the host sees it.
    pub pid: i32,
    /// The process's UID in the initial user namespace: for a Stockade container, an ID of
    /// its pod's host range, which names the pod even after the process is gone.
    pub uid: Option<u32>,
    /// AUDIT_ARCH_* of the syscall's ABI.
    pub arch: u32,
    pub syscall: i64,
    /// The filter's action (`code`, SECCOMP_RET_ACTION_FULL bits only).
    pub code: u32,
    pub comm: Option<String>,
}

impl SeccompRecord {
    /// The syscall's name for the record's ABI, or `<abi>:<number>` when unknown.
    pub fn syscall_name(&self) -> String {
        syscall_name(self.arch, self.syscall)
    }

    /// `errno`, `kill_process`, ... (the names of /proc/sys/kernel/seccomp/actions_logged).
    pub fn action(&self) -> &'static str {
        action_name(self.code)
    }

    /// Whether the filter refused the call (everything but `log` and `allow`).
    pub fn is_denial(&self) -> bool {
        !matches!(
            self.code & libc::SECCOMP_RET_ACTION_FULL,
            libc::SECCOMP_RET_LOG | libc::SECCOMP_RET_ALLOW
        )
    }
}

/// Parses a kmsg or auditd log line; None when it is not a seccomp record (or is broken).
pub fn parse_line(line: &str) -> Option<SeccompRecord> {
    // kmsg prefix: "PRIORITY,SEQ,USEC,FLAGS;" then the message, then continuation lines.
    let message = match line.split_once(';') {
        Some((prefix, rest)) if is_kmsg_prefix(prefix) => rest,
        _ => line,
    };
    let message = message.lines().next().unwrap_or("");
    let start = message
        .find("type=1326 ")
        .or_else(|| message.find("type=SECCOMP "))?;
    parse_body(&message[start..])
}

fn is_kmsg_prefix(prefix: &str) -> bool {
    let fields: Vec<&str> = prefix.split(',').collect();
    fields.len() >= 4
        && fields[..3]
            .iter()
            .all(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

/// Parses the body of a type-1326 record (`audit(...): key=value ...`).
pub fn parse_body(body: &str) -> Option<SeccompRecord> {
    // auditd's enriched format appends interpreted fields after 0x1d.
    let body = body.split('\u{1d}').next().unwrap_or("");
    let mut pid = None;
    let mut uid = None;
    let mut arch = None;
    let mut syscall = None;
    let mut code = None;
    let mut comm = None;
    for (key, value) in fields(body) {
        match key {
            "pid" => pid = i32::from_str(value).ok(),
            "uid" => uid = u32::from_str(value).ok(),
            "arch" => arch = u32::from_str_radix(value, 16).ok(),
            "syscall" => syscall = i64::from_str(value).ok(),
            "code" => code = parse_hex(value),
            "comm" => comm = Some(value.to_string()),
            _ => {}
        }
    }
    Some(SeccompRecord {
        pid: pid.filter(|p| *p > 0)?,
        // (uid_t)-1 is "no UID".
        uid: uid.filter(|u| *u != u32::MAX),
        arch: arch?,
        syscall: syscall?,
        code: code? & libc::SECCOMP_RET_ACTION_FULL,
        comm,
    })
}

fn parse_hex(value: &str) -> Option<u32> {
    let digits = value
        .strip_prefix("0x")
        .or_else(|| value.strip_prefix("0X"))?;
    u32::from_str_radix(digits, 16).ok()
}

/// `key=value` pairs separated by spaces; a value may be double-quoted (quotes removed).
/// The kernel hex-encodes values with spaces or quotes, so quotes never nest.
fn fields(body: &str) -> impl Iterator<Item = (&str, &str)> {
    let mut rest = body;
    std::iter::from_fn(move || loop {
        rest = rest.trim_start_matches(' ');
        if rest.is_empty() {
            return None;
        }
        let token_end = rest.find(' ').unwrap_or(rest.len());
        let Some(eq) = rest[..token_end].find('=') else {
            rest = &rest[token_end..];
            continue;
        };
        let key = &rest[..eq];
        let after = &rest[eq + 1..];
        if let Some(quoted) = after.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            rest = quoted.get(end + 1..).unwrap_or("");
            return Some((key, &quoted[..end]));
        }
        let end = after.find(' ').unwrap_or(after.len());
        rest = &after[end..];
        return Some((key, &after[..end]));
    })
}

/// The name of syscall `nr` for an AUDIT_ARCH_* value.
pub fn syscall_name(arch: u32, nr: i64) -> String {
    let known = usize::try_from(nr).ok().and_then(|n| match arch {
        AUDIT_ARCH_X86_64 => syscalls::x86_64::Sysno::new(n).map(|s| s.name()),
        AUDIT_ARCH_AARCH64 => syscalls::aarch64::Sysno::new(n).map(|s| match s.name() {
            // The kernel's (and the seccomp profile's) name for number 79.
            "fstatat" => "newfstatat",
            name => name,
        }),
        _ => None,
    });
    match known {
        Some(name) => name.to_string(),
        None => format!("{}:{nr}", arch_name(arch)),
    }
}

/// A short name for an AUDIT_ARCH_* value.
pub fn arch_name(arch: u32) -> String {
    match arch {
        AUDIT_ARCH_X86_64 => "x86_64".into(),
        AUDIT_ARCH_AARCH64 => "aarch64".into(),
        AUDIT_ARCH_I386 => "i386".into(),
        AUDIT_ARCH_ARM => "arm".into(),
        other => format!("arch{other:x}"),
    }
}

/// The action's name as in /proc/sys/kernel/seccomp/actions_logged.
pub fn action_name(code: u32) -> &'static str {
    match code & libc::SECCOMP_RET_ACTION_FULL {
        libc::SECCOMP_RET_KILL_PROCESS => "kill_process",
        libc::SECCOMP_RET_KILL_THREAD => "kill_thread",
        libc::SECCOMP_RET_TRAP => "trap",
        libc::SECCOMP_RET_ERRNO => "errno",
        libc::SECCOMP_RET_USER_NOTIF => "user_notif",
        libc::SECCOMP_RET_TRACE => "trace",
        libc::SECCOMP_RET_LOG => "log",
        libc::SECCOMP_RET_ALLOW => "allow",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KMSG: &str = "5,1532,1244151726,-;audit: type=1326 audit(1795713797.180:10): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=517 comm=\"s\" exe=\"/tmp/mon/s\" sig=0 arch=c000003e syscall=250 compat=0 ip=0x7f719e498829 code=0x50000";
    const DMESG: &str = "[ 1244.660443] audit: type=1326 audit(1795713797.688:13): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=521 comm=\"s\" exe=\"/tmp/mon/s\" sig=0 arch=c000003e syscall=250 compat=0 ip=0x7f9d2aadc829 code=0x7ffc0000";
    const AUDITD: &str = "type=SECCOMP msg=audit(1795713797.180:10): auid=1000 uid=1000 gid=1000 ses=3 subj=unconfined pid=4242 comm=\"my app\" exe=\"/usr/bin/app\" sig=31 arch=c00000b7 syscall=79 compat=0 ip=0xffff8 code=0x80000000\u{1d}AUID=\"user\" UID=\"user\" GID=\"user\" ARCH=aarch64 SYSCALL=newfstatat";
    const NETLINK: &str = "audit(1795713813.648:56): auid=4294967295 uid=0 gid=0 ses=4294967295 pid=772 comm=636F6D6D2077697468207370616365 exe=\"/tmp/mon/s\" sig=0 arch=c000003e syscall=272 compat=0 ip=0x7f01e5b0c829 code=0x50001";

    #[test]
    fn kmsg_record() {
        let r = parse_line(KMSG).unwrap();
        assert_eq!(r.pid, 517);
        // `uid`, not `auid` (4294967295, "unset").
        assert_eq!(r.uid, Some(0));
        assert_eq!(r.syscall, 250);
        assert_eq!(r.syscall_name(), "keyctl");
        assert_eq!(r.action(), "errno");
        assert!(r.is_denial());
        assert_eq!(r.comm.as_deref(), Some("s"));
    }

    #[test]
    fn dmesg_record_with_log_action_is_not_a_denial() {
        let r = parse_line(DMESG).unwrap();
        assert_eq!(r.pid, 521);
        assert_eq!(r.action(), "log");
        assert!(!r.is_denial());
    }

    #[test]
    fn auditd_enriched_record() {
        let r = parse_line(AUDITD).unwrap();
        assert_eq!(r.pid, 4242);
        assert_eq!(r.uid, Some(1000));
        assert_eq!(r.comm.as_deref(), Some("my app"));
        assert_eq!(r.arch, AUDIT_ARCH_AARCH64);
        assert_eq!(r.syscall_name(), "newfstatat");
        assert_eq!(r.action(), "kill_process");
    }

    #[test]
    fn netlink_body_with_hex_comm_and_errno_data() {
        let r = parse_body(NETLINK).unwrap();
        assert_eq!(r.pid, 772);
        assert_eq!(r.syscall_name(), "unshare");
        // Data bits (errno) are masked off.
        assert_eq!(r.code, libc::SECCOMP_RET_ERRNO);
    }

    #[test]
    fn other_records_and_broken_ones_are_skipped() {
        assert_eq!(parse_line("6,1,2,-;eth0: link up"), None);
        assert_eq!(
            parse_line("type=SYSCALL msg=audit(1.2:3): arch=c000003e syscall=59 pid=1"),
            None
        );
        assert_eq!(
            parse_line("audit: type=1326 audit(1:2): pid=x syscall=1"),
            None
        );
        assert_eq!(
            parse_line("audit: type=1326 audit(1:2): pid=5 arch=c000003e syscall=1"),
            None
        );
        assert_eq!(parse_line(""), None);
    }

    #[test]
    fn unknown_abis_keep_their_number() {
        assert_eq!(syscall_name(AUDIT_ARCH_I386, 11), "i386:11");
        assert_eq!(syscall_name(AUDIT_ARCH_X86_64, 100_000), "x86_64:100000");
        assert_eq!(syscall_name(AUDIT_ARCH_X86_64, -1), "x86_64:-1");
        assert_eq!(syscall_name(AUDIT_ARCH_AARCH64, 97), "unshare");
    }
}
