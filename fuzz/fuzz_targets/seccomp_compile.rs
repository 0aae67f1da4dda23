//! Any OCI `LinuxSeccomp` JSON -> the seccomp compiler, for both architectures. It must
//! return Ok or an error, never panic; a compiled profile must be installable (every
//! program 1..=BPF_MAXINSNS instructions) and mean what the module docs say: a syscall no
//! rule names gets the default action, a syscall an unconditional rule names gets that
//! rule's action or a stronger one, and on x86_64 an x32 call gets ENOSYS.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stockade_runtime::oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction};
use stockade_runtime::seccomp::{compile_for, describe_action, Arch};

/// BPF_MAXINSNS from <linux/bpf_common.h>: the kernel refuses longer programs.
const BPF_MAXINSNS: usize = 4096;
/// No architecture has a syscall this high, so no rule can name it.
const UNNAMED_NR: i64 = 0x3fff;
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

fuzz_target!(|data: &[u8]| {
    let Ok(profile) = serde_json::from_slice::<LinuxSeccomp>(data) else {
        return;
    };
    for arch in Arch::ALL {
        if let Ok(filter) = compile_for(&profile, arch) {
            check(&profile, arch, &filter);
        }
    }
});

fn check(profile: &LinuxSeccomp, arch: Arch, filter: &stockade_runtime::seccomp::CompiledFilter) {
    for (i, len) in filter.program_lengths().into_iter().enumerate() {
        assert!(
            (1..=BPF_MAXINSNS).contains(&len),
            "{}: program {i} has {len} instructions",
            arch.name()
        );
    }
    let verdict = |nr: i64| {
        filter.evaluate(nr, [0; 6]).unwrap_or_else(|e| {
            panic!(
                "{}: nr {nr}: the compiled BPF does not run: {e}",
                arch.name()
            )
        })
    };

    let default = ret_of(profile.default_action(), profile.default_errno_ret());
    let got = verdict(UNNAMED_NR);
    assert_eq!(
        got,
        default,
        "{}: an unnamed syscall gets {}, not the default {}",
        arch.name(),
        describe_action(got),
        describe_action(default)
    );

    for rule in profile.syscalls().iter().flatten() {
        if rule.args().as_ref().is_some_and(|a| !a.is_empty()) {
            continue;
        }
        let wanted = ret_of(rule.action(), rule.errno_ret());
        for name in rule.names() {
            let Some(nr) = arch.number(name) else {
                continue;
            };
            let got = verdict(nr);
            assert!(
                rank(got) <= rank(wanted),
                "{}: {name} gets {}, weaker than its rule's {}",
                arch.name(),
                describe_action(got),
                describe_action(wanted)
            );
        }
    }

    if arch == Arch::X86_64 && filter.program_count() > 0 {
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        let got = verdict(X32_SYSCALL_BIT | 2);
        assert_eq!(got, enosys, "x32 open gets {}", describe_action(got));
    }
}

/// The kernel's precedence: lower is more restrictive (KILL_PROCESS is negative).
fn rank(ret: u32) -> i32 {
    (ret & libc::SECCOMP_RET_ACTION_FULL) as i32
}

/// The seccomp return value an OCI action stands for, written from the kernel's and
/// libseccomp's definitions rather than the compiler's, so the check is independent.
fn ret_of(action: LinuxSeccompAction, errno: Option<u32>) -> u32 {
    use LinuxSeccompAction as A;
    let data = errno.unwrap_or(libc::EPERM as u32) & libc::SECCOMP_RET_DATA;
    match action {
        A::ScmpActAllow => libc::SECCOMP_RET_ALLOW,
        A::ScmpActErrno => libc::SECCOMP_RET_ERRNO | data,
        A::ScmpActTrace => libc::SECCOMP_RET_TRACE | data,
        A::ScmpActKill | A::ScmpActKillThread => libc::SECCOMP_RET_KILL_THREAD,
        A::ScmpActKillProcess => libc::SECCOMP_RET_KILL_PROCESS,
        A::ScmpActTrap => libc::SECCOMP_RET_TRAP,
        A::ScmpActLog => libc::SECCOMP_RET_LOG,
        // The compiler refuses NOTIFY, so a compiled profile never has it.
        A::ScmpActNotify => unreachable!("SCMP_ACT_NOTIFY compiled"),
    }
}
