//! A workload's own seccomp profile from what it was seen to call in record mode, and how
//! such a profile narrows the default. Pure: the recording comes in as names.
//!
//! The generated profile is a Kubernetes localhost profile (OCI LinuxSeccomp): ERRNO(EPERM)
//! by default, ALLOW for exactly the recorded syscalls plus [`RUNTIME_AFTER_FILTER`], and
//! the default filter's ERRNO answers other than EPERM copied (clone3 -> ENOSYS), because
//! between equal actions the last installed filter's errno wins and glibc falls back from
//! clone3 to clone only on ENOSYS. Given as the pod's own profile it is stacked on the
//! default, so it can only narrow it.

use super::Arch;
use crate::oci_spec::runtime::{
    Arch as OciArch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompBuilder, LinuxSyscall,
    LinuxSyscallBuilder,
};
use std::collections::BTreeSet;
use std::str::FromStr;

/// Syscalls Stockade's container init makes after its filters are installed, before the
/// workload runs: `seccomp` (a profile compiles to several BPF programs, and the pod's
/// first one is in force while the rest are installed), the workload's exec
/// (libcontainer's `execvp`), and on a failed exec the error report (allocation, a log
/// write, the message to the shim) and the exit. They are part of every generated
/// profile, whether or not the recording saw them.
pub const RUNTIME_AFTER_FILTER: &[&str] = &[
    "execve",
    "seccomp",
    "brk",
    "mmap",
    "munmap",
    "mremap",
    "futex",
    "write",
    "sendmsg",
    "sigaltstack",
    "rt_sigprocmask",
    "exit",
    "exit_group",
];

/// The EPERM every generated profile answers with.
const EPERM: u32 = libc::EPERM as u32;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordedError {
    #[error("the recording names no syscall: nothing ran in record mode")]
    Empty,
    #[error("recorded syscall `{0}` is unknown on {1}")]
    Unknown(String, &'static str),
}

/// The profile for a workload that called `recorded` on `arch`, under `default`.
pub fn profile_from_recording(
    recorded: &BTreeSet<String>,
    default: &LinuxSeccomp,
    arch: Arch,
) -> Result<LinuxSeccomp, RecordedError> {
    if recorded.is_empty() {
        return Err(RecordedError::Empty);
    }
    if let Some(unknown) = recorded.iter().find(|n| arch.number(n).is_none()) {
        return Err(RecordedError::Unknown(unknown.clone(), arch.name()));
    }
    let names: BTreeSet<String> = recorded
        .iter()
        .cloned()
        .chain(RUNTIME_AFTER_FILTER.iter().map(|s| s.to_string()))
        .collect();
    let allow = rule(
        names.into_iter().collect(),
        LinuxSeccompAction::ScmpActAllow,
        None,
    );
    // The default's other errno answers, where they name syscalls of this architecture.
    let answers = default.syscalls().iter().flatten().filter(|r| {
        r.action() == LinuxSeccompAction::ScmpActErrno
            && r.errno_ret().is_some_and(|e| e != EPERM)
            && r.args().as_ref().is_none_or(|a| a.is_empty())
    });
    let answers = answers.filter_map(|r| {
        let names: Vec<String> = r
            .names()
            .iter()
            .filter(|n| arch.number(n).is_some() && !recorded.contains(*n))
            .cloned()
            .collect();
        (!names.is_empty()).then(|| rule(names, r.action(), r.errno_ret()))
    });
    let syscalls: Vec<LinuxSyscall> = std::iter::once(allow).chain(answers).collect();
    let profile = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(EPERM)
        .architectures(vec![oci_arch(arch)])
        .syscalls(syscalls)
        .build()
        .expect("every field of the builder is set");
    Ok(profile)
}

fn rule(names: Vec<String>, action: LinuxSeccompAction, errno: Option<u32>) -> LinuxSyscall {
    let mut builder = LinuxSyscallBuilder::default().names(names).action(action);
    if let Some(errno) = errno {
        builder = builder.errno_ret(errno);
    }
    builder.build().expect("names and action are set")
}

fn oci_arch(arch: Arch) -> OciArch {
    match arch {
        Arch::X86_64 => OciArch::ScmpArchX86_64,
        Arch::Aarch64 => OciArch::ScmpArchAarch64,
    }
}

/// Every syscall name of `arch` (the kernel's names).
pub fn all_names(arch: Arch) -> Vec<String> {
    let names: Vec<&str> = match arch {
        Arch::X86_64 => syscalls::x86_64::Sysno::iter().map(|s| s.name()).collect(),
        Arch::Aarch64 => syscalls::aarch64::Sysno::iter()
            .map(|s| match s.name() {
                "fstatat" => "newfstatat",
                name => name,
            })
            .collect(),
    };
    names
        .into_iter()
        .filter(|n| arch.number(n).is_some())
        .map(str::to_string)
        .collect()
}

/// The syscalls `profile` lets through on `arch`: those whose verdict, with all arguments
/// zero, is ALLOW or LOG (a rule with argument conditions counts where zero arguments
/// pass it: clone without namespace flags, socket(AF_UNSPEC)).
pub fn allowed_names(
    profile: &LinuxSeccomp,
    arch: Arch,
) -> Result<BTreeSet<String>, super::SeccompError> {
    let compiled = super::compile_for(profile, arch)?;
    let mut allowed = BTreeSet::new();
    for name in all_names(arch) {
        let Some(nr) = arch.number(&name) else {
            continue;
        };
        let verdict = compiled
            .evaluate(nr, [0; 6])
            .map_err(|_| super::SeccompError::Internal("BPF evaluation failed"))?;
        let action = verdict & libc::SECCOMP_RET_ACTION_FULL;
        if action == libc::SECCOMP_RET_ALLOW || action == libc::SECCOMP_RET_LOG {
            allowed.insert(name);
        }
    }
    Ok(allowed)
}

/// How a pod's profile, stacked on the default, narrows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Narrowing {
    pub arch: &'static str,
    /// Allowed by the default filter.
    pub default_allowed: usize,
    /// Allowed by both (what a container gets with the pod's profile stacked on).
    pub stacked_allowed: usize,
    /// Allowed by the default, denied by the pod's profile.
    pub newly_denied: Vec<String>,
    /// Allowed by the pod's profile but denied by the default: stacking keeps them denied.
    pub still_denied: Vec<String>,
    /// Allowed by both.
    pub kept: Vec<String>,
}

/// Compares the two filters on `arch`.
pub fn narrowing(
    default: &LinuxSeccomp,
    pod: &LinuxSeccomp,
    arch: Arch,
) -> Result<Narrowing, super::SeccompError> {
    let base = allowed_names(default, arch)?;
    let own = allowed_names(pod, arch)?;
    Ok(Narrowing {
        arch: arch.name(),
        default_allowed: base.len(),
        stacked_allowed: base.intersection(&own).count(),
        newly_denied: base.difference(&own).cloned().collect(),
        still_denied: own.difference(&base).cloned().collect(),
        kept: base.intersection(&own).cloned().collect(),
    })
}

/// Parses a recording's syscall names (as the exporter names them); helper for callers
/// that read names from text.
pub fn parse_names<'a>(names: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    names
        .into_iter()
        .map(|n| n.trim().to_string())
        .filter(|n| !n.is_empty())
        .collect()
}

impl FromStr for Arch {
    type Err = String;
    fn from_str(s: &str) -> Result<Arch, String> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| format!("unknown architecture {s:?} (x86_64 or aarch64)"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped_default() -> LinuxSeccomp {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../profiles/seccomp/default.json"
        );
        super::super::load_file(std::path::Path::new(path)).unwrap()
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        parse_names(list.iter().copied())
    }

    #[test]
    fn generated_profile_allows_exactly_the_recording_and_the_runtime() {
        let default = shipped_default();
        let recorded = names(&["read", "getppid", "openat"]);
        let profile = profile_from_recording(&recorded, &default, Arch::X86_64).unwrap();
        assert_eq!(profile.default_action(), LinuxSeccompAction::ScmpActErrno);
        let allowed = allowed_names(&profile, Arch::X86_64).unwrap();
        let want: BTreeSet<String> = recorded
            .iter()
            .cloned()
            .chain(RUNTIME_AFTER_FILTER.iter().map(|s| s.to_string()))
            .collect();
        assert_eq!(allowed, want);
        // clone3 keeps the default's ENOSYS, so glibc falls back to clone.
        let compiled = super::super::compile_for(&profile, Arch::X86_64).unwrap();
        let clone3 = Arch::X86_64.number("clone3").unwrap();
        assert_eq!(
            compiled.evaluate(clone3, [0; 6]).unwrap(),
            libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32
        );
        let getpid = Arch::X86_64.number("getpid").unwrap();
        assert_eq!(
            compiled.evaluate(getpid, [0; 6]).unwrap(),
            libc::SECCOMP_RET_ERRNO | EPERM
        );
        // It round-trips through the loader the shim and kubelet's files go through.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.json");
        std::fs::write(&file, serde_json::to_string_pretty(&profile).unwrap()).unwrap();
        assert_eq!(super::super::load_file(&file).unwrap(), profile);
    }

    #[test]
    fn empty_and_unknown_recordings_are_errors() {
        let default = shipped_default();
        assert_eq!(
            profile_from_recording(&BTreeSet::new(), &default, Arch::X86_64),
            Err(RecordedError::Empty)
        );
        let e = profile_from_recording(&names(&["x86_64:999"]), &default, Arch::X86_64);
        assert_eq!(
            e,
            Err(RecordedError::Unknown("x86_64:999".into(), "x86_64"))
        );
    }

    #[test]
    fn narrowing_counts_what_stacking_keeps() {
        let default = shipped_default();
        let recorded = names(&["read", "mount"]);
        let profile = profile_from_recording(&recorded, &default, Arch::X86_64).unwrap();
        let n = narrowing(&default, &profile, Arch::X86_64).unwrap();
        assert!(n.default_allowed > 300, "{}", n.default_allowed);
        // mount is denied by the default: the recorded profile cannot give it back.
        assert_eq!(n.still_denied, ["mount"]);
        assert_eq!(n.stacked_allowed, 1 + RUNTIME_AFTER_FILTER.len());
        assert!(n.newly_denied.contains(&"getppid".to_string()));
        assert_eq!(n.stacked_allowed + n.newly_denied.len(), n.default_allowed);
    }
}
