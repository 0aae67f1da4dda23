//! The two architectures Stockade compiles filters for, and their syscall tables.

use crate::oci_spec::runtime::Arch as OciArch;
use std::str::FromStr;

/// A 64-bit architecture with a native seccomp ABI we compile for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    X86_64,
    Aarch64,
}

/// `AUDIT_ARCH_X86_64` and `AUDIT_ARCH_AARCH64` from `<linux/audit.h>`: what the kernel puts
/// in `seccomp_data.arch`.
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;
const AUDIT_ARCH_AARCH64: u32 = 0xC000_00B7;

impl Arch {
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The architecture this binary runs on, if it is one we support.
    pub const fn running() -> Option<Arch> {
        if cfg!(target_arch = "x86_64") {
            Some(Arch::X86_64)
        } else if cfg!(target_arch = "aarch64") {
            Some(Arch::Aarch64)
        } else {
            None
        }
    }

    pub const fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }

    pub const fn audit_arch(self) -> u32 {
        match self {
            Arch::X86_64 => AUDIT_ARCH_X86_64,
            Arch::Aarch64 => AUDIT_ARCH_AARCH64,
        }
    }

    pub const fn target(self) -> seccompiler::TargetArch {
        match self {
            Arch::X86_64 => seccompiler::TargetArch::x86_64,
            Arch::Aarch64 => seccompiler::TargetArch::aarch64,
        }
    }

    /// Whether an OCI `architectures` entry designates this architecture's native ABI.
    pub fn is_named_by(self, arch: OciArch) -> bool {
        matches!(
            (self, arch),
            (_, OciArch::ScmpArchNative)
                | (Arch::X86_64, OciArch::ScmpArchX86_64)
                | (Arch::Aarch64, OciArch::ScmpArchAarch64)
        )
    }

    /// The syscall number of `name` on this architecture.
    pub fn number(self, name: &str) -> Option<i64> {
        match self {
            Arch::X86_64 => syscalls::x86_64::Sysno::from_str(name)
                .ok()
                .map(|s| i64::from(s.id())),
            Arch::Aarch64 => {
                // The kernel and libseccomp call number 79 `newfstatat` on 64-bit
                // architectures; the `syscalls` crate calls it `fstatat`.
                let name = if name == "newfstatat" {
                    "fstatat"
                } else {
                    name
                };
                let nr = i64::from(syscalls::aarch64::Sysno::from_str(name).ok()?.id());
                // 403..=423 are the 32-bit time64 calls of asm-generic: the `syscalls` crate
                // lists them for aarch64, but a native arm64 process has no such syscalls.
                (!(403..=423).contains(&nr)).then_some(nr)
            }
        }
    }
}

/// ARM private syscalls (`__ARM_NR_*`) and an alias the `syscalls` crate's arm table lacks.
const ARM_PRIVATE: &[&str] = &[
    "breakpoint",
    "cacheflush",
    "usr26",
    "usr32",
    "set_tls",
    "get_tls",
    "sync_file_range2",
];

/// Whether `name` is a syscall of a 32-bit ABI of a supported architecture (i386 on x86_64,
/// AArch32 on aarch64). Profiles written for several ABIs (containerd's and moby's
/// defaults) list such names; Stockade's filters refuse those ABIs as a whole, so a rule
/// for such a name has nothing to act on natively and is skipped.
pub fn is_compat_name(name: &str) -> bool {
    syscalls::x86::Sysno::from_str(name).is_ok()
        || syscalls::arm::Sysno::from_str(name).is_ok()
        || ARM_PRIVATE.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_resolve_common_names_on_both_arches() {
        assert_eq!(Arch::X86_64.number("getpid"), Some(39));
        assert_eq!(Arch::Aarch64.number("getpid"), Some(172));
        assert_eq!(Arch::X86_64.number("clone3"), Some(435));
        assert_eq!(Arch::Aarch64.number("clone3"), Some(435));
        assert_eq!(Arch::X86_64.number("newfstatat"), Some(262));
        assert_eq!(Arch::Aarch64.number("newfstatat"), Some(79));
    }

    #[test]
    fn arch_specific_and_32bit_names() {
        assert!(Arch::X86_64.number("arch_prctl").is_some());
        assert_eq!(Arch::Aarch64.number("arch_prctl"), None);
        assert_eq!(Arch::Aarch64.number("clock_gettime64"), None);
        assert_eq!(Arch::X86_64.number("clock_gettime64"), None);
        assert_eq!(Arch::X86_64.number("no_such_syscall"), None);
        for name in [
            "_llseek",
            "mmap2",
            "socketcall",
            "clock_gettime64",
            "set_tls",
        ] {
            assert!(is_compat_name(name), "{name}");
        }
        assert!(!is_compat_name("no_such_syscall"));
    }
}
