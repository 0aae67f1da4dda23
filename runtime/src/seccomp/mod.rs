//! Seccomp: OCI `LinuxSeccomp` profiles compiled to BPF with `seccompiler` (and a range
//! search in front of its chains, see `dispatch.rs`), and installed.
//!
//! The interface (the shim, the CLI, the bench and the fuzz targets call these):
//! - [`load_file`]`(path) -> Result<LinuxSeccomp, SeccompError>`: read and parse an OCI
//!   seccomp JSON file; errors name the file and the problem. Unknown keys are refused
//!   (moby's `includes`/`excludes`/`archMap` would otherwise be dropped, widening the
//!   profile); a `comment` string is accepted anywhere a rule or the profile is.
//! - [`compile`]`(&LinuxSeccomp) -> Result<CompiledFilter, SeccompError>` for the running
//!   architecture ([`compile_for`] for a named one).
//! - [`CompiledFilter::install`]`(&self, log_denials)` and [`install_all`]: install in the
//!   calling thread (sets no_new_privs first). They do not allocate: they run in the
//!   container's init between fork and exec.
//!
//! # Meaning of a profile
//! A syscall gets the action of the **most restrictive rule that matches it** (kernel order:
//! KILL_PROCESS > KILL_THREAD > TRAP > ERRNO > TRACE > LOG > ALLOW), or the default action
//! when no rule matches. A rule matches when its name is the syscall and all its argument
//! conditions hold (64-bit comparisons, like libseccomp; MASKED_EQ is
//! `(arg & value) == valueTwo`). Names that exist only on the other supported architecture,
//! or only in their 32-bit ABIs (i386, AArch32: `_llseek`, `mmap2`, `*_time64`, as listed by
//! containerd's and moby's defaults), are skipped; names none of these know are errors (a
//! typo, an s390 or riscv call), as is anything else this
//! compiler cannot honour exactly (NOTIFY, listenerPath, SPEC_ALLOW, an argument index above
//! 5, one argument tested twice in a rule, errnoRet on an action without errno data, ...).
//!
//! # Why several BPF programs, and why that is sound
//! seccompiler's `SeccompFilter` has one match action and one mismatch action. The kernel
//! runs every stacked filter and keeps the highest-precedence result (for equal actions,
//! the most recently installed filter's data). With `D` the default action, a profile
//! becomes, in install order:
//! 1. the *default filter* (omitted when `D` is ALLOW): match = every rule whose action is
//!    not exactly `D` -> ALLOW; mismatch -> `D`;
//! 2. for each distinct non-ALLOW action value `A` (errno data included, `D` included if
//!    rules use it): match = the rules of `A` -> `A`; mismatch -> ALLOW.
//!
//! For a syscall call `s`: if no rule matches, filter 1 returns `D` and every filter 2
//! returns ALLOW, so the verdict is `D`. If rules match, filter 1 returns ALLOW (or `D`
//! when only `D`-rules match) and each filter `A` returns `A` exactly when an `A`-rule
//! matches, so the verdict is the most restrictive matching action, never weaker than any
//! matching rule and never `D` unless a `D`-rule matches or none does. A conditional rule
//! whose condition fails simply does not match: `s` falls back to `D` (e.g. `clone` with
//! CLONE_NEWUSER -> EPERM), while `clone3`, named by an ERRNO(ENOSYS) rule, gets ENOSYS
//! (ERRNO beats ALLOW from filter 1). Filters 2 are installed in reverse order of their
//! first rule in the profile, so between equal-precedence actions with different data
//! (ERRNO(38) vs ERRNO(1)) the rule listed first wins.
//!
//! # Stacking a pod's profile
//! The pod's own profile is compiled on its own and installed after the node's default
//! (`install_all(&[&default, &pod], ..)`). Stacked filters can only add restrictions: the
//! kernel keeps the most restrictive verdict of all of them, so the pod can narrow (its
//! EACCES for getcwd wins over the default's ALLOW) but never widen (its ALLOW for mount
//! loses to the default's EPERM). Between equal actions the pod's data wins.
//!
//! # Other ABIs
//! Every program starts with seccompiler's architecture check: a syscall made through
//! another ABI (i386 `int 0x80` on x86_64, AArch32 on arm64) kills the process. On x86_64,
//! x32 syscall numbers (bit 30 set) share the native AUDIT_ARCH; the first program answers
//! them with ENOSYS before any rule, as a kernel without x32 support would.
//!
//! # Audit logging
//! With `log_denials` (or the profile flag SECCOMP_FILTER_FLAG_LOG) every program is
//! installed with SECCOMP_FILTER_FLAG_LOG, except a filter whose action is ERRNO(ENOSYS):
//! that answer means "use the older call" (clone3 -> clone) and glibc asks it on every
//! thread start, which would flood the audit log.

mod arch;
mod compile;
mod dispatch;
mod eval;
mod install;
pub mod recorded;

pub use arch::Arch;
pub use eval::{combine, SeccompData};
pub use install::install_all;

use crate::oci_spec::runtime::LinuxSeccomp;
use std::path::{Path, PathBuf};

/// The kernel's limit on instructions in one classic-BPF program (BPF_MAXINSNS).
const BPF_MAX_LEN: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp profile {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "seccomp profile {path}: invalid OCI LinuxSeccomp JSON: {}{source}",
        key_prefix(key)
    )]
    Json {
        path: PathBuf,
        /// Where in the document (`syscalls[0].action`); empty for the document as a whole.
        key: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("seccomp profile {path}: unknown key `{key}` in {location} (not OCI LinuxSeccomp; moby's includes/excludes/archMap are not supported)")]
    UnknownKey {
        path: PathBuf,
        location: String,
        key: String,
    },
    #[error("seccomp: cannot compile for this machine's architecture {0}; Stockade supports x86_64 and aarch64")]
    UnsupportedHostArch(&'static str),
    #[error("seccomp profile lists architectures [{listed}] but not the running one ({running})")]
    ArchNotListed {
        running: &'static str,
        listed: String,
    },
    #[error("seccomp profile: {what} is not supported: {why}")]
    Unsupported { what: String, why: &'static str },
    #[error("seccomp profile: defaultAction: {problem}")]
    InvalidDefault { problem: String },
    #[error("seccomp profile: syscalls[{rule}] ({names}): {problem}")]
    InvalidRule {
        rule: usize,
        names: String,
        problem: String,
    },
    #[error(
        "seccomp profile: syscalls[{rule}]: syscall `{name}` is unknown on x86_64, aarch64 and their 32-bit ABIs"
    )]
    UnknownSyscall { rule: usize, name: String },
    #[error("seccomp: seccompiler refused the {filter} filter: {source}")]
    Backend {
        filter: String,
        #[source]
        source: seccompiler::BackendError,
    },
    #[error(
        "seccomp: the {filter} filter has {len} BPF instructions; the kernel accepts at most 4096"
    )]
    TooLarge { filter: &'static str, len: usize },
    #[error("seccomp: internal error: {0}")]
    Internal(&'static str),
    #[error("seccomp: filter compiled for {compiled} cannot be installed on {running}")]
    WrongArch {
        compiled: &'static str,
        running: &'static str,
    },
    #[error("seccomp: prctl(PR_SET_NO_NEW_PRIVS) failed: errno {errno}")]
    NoNewPrivs { errno: i32 },
    #[error(
        "seccomp: seccomp(SECCOMP_SET_MODE_FILTER) failed for program {program}: errno {errno}"
    )]
    Install { program: usize, errno: i32 },
    #[error("seccomp: SECCOMP_FILTER_FLAG_TSYNC failed: thread {tid} could not be synchronized")]
    ThreadSync { tid: i64 },
}

/// Which half of the decomposition (see the module docs) a program is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Rules -> ALLOW, everything else -> the default action.
    Default,
    /// One action's rules -> that action, everything else -> ALLOW.
    Action,
}

impl Role {
    const fn name(self) -> &'static str {
        match self {
            Role::Default => "default",
            Role::Action => "action",
        }
    }
}

/// One BPF program of a compiled profile.
#[derive(Debug, Clone)]
struct Program {
    bpf: seccompiler::BpfProgram,
    /// The seccomp return value its rules stand for (its match action, or for the default
    /// filter its mismatch action).
    ret: u32,
    role: Role,
    /// Whether SECCOMP_FILTER_FLAG_LOG applies to it when logging is asked for.
    log: bool,
}

/// One profile compiled for one architecture: BPF programs installed in order.
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    arch: Arch,
    programs: Vec<Program>,
    /// The profile's own SECCOMP_FILTER_FLAG_LOG.
    log: bool,
    /// The profile's SECCOMP_FILTER_FLAG_TSYNC.
    tsync: bool,
}

/// Reads and parses an OCI LinuxSeccomp JSON file (the format of config.json's
/// `linux.seccomp` and of Kubernetes localhost profiles).
pub fn load_file(path: &Path) -> Result<LinuxSeccomp, SeccompError> {
    let text = std::fs::read_to_string(path).map_err(|source| SeccompError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let json_error = |key: String, source| {
        // `?` stands for a map key that was never read (the document ended early).
        let key = key.trim_end_matches(".?");
        SeccompError::Json {
            path: path.to_path_buf(),
            key: if key == "." || key == "?" {
                String::new()
            } else {
                key.to_string()
            },
            source,
        }
    };
    // Typed parse first: its errors carry the key, line and column.
    let profile: LinuxSeccomp =
        serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_str(&text))
            .map_err(|e| json_error(e.path().to_string(), e.into_inner()))?;
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| json_error(String::new(), e))?;
    check_keys(&value).map_err(|(location, key)| SeccompError::UnknownKey {
        path: path.to_path_buf(),
        location,
        key,
    })?;
    Ok(profile)
}

fn key_prefix(key: &str) -> String {
    if key.is_empty() {
        String::new()
    } else {
        format!("key `{key}`: ")
    }
}

/// Refuses keys oci-spec's serde would silently ignore. Returns (location, key).
fn check_keys(value: &serde_json::Value) -> Result<(), (String, String)> {
    const TOP: &[&str] = &[
        "defaultAction",
        "defaultErrnoRet",
        "architectures",
        "flags",
        "listenerPath",
        "listenerMetadata",
        "syscalls",
        "comment",
    ];
    const RULE: &[&str] = &["names", "action", "errnoRet", "args", "comment"];
    const ARG: &[&str] = &["index", "value", "valueTwo", "op"];
    fn only(
        object: Option<&serde_json::Map<String, serde_json::Value>>,
        known: &[&str],
        location: impl Fn() -> String,
    ) -> Result<(), (String, String)> {
        match object.and_then(|o| o.keys().find(|k| !known.contains(&k.as_str()))) {
            Some(key) => Err((location(), key.clone())),
            None => Ok(()),
        }
    }
    only(value.as_object(), TOP, || "the profile".into())?;
    let rules = value.get("syscalls").and_then(|s| s.as_array());
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        only(rule.as_object(), RULE, || format!("syscalls[{i}]"))?;
        let args = rule.get("args").and_then(|a| a.as_array());
        for (j, arg) in args.into_iter().flatten().enumerate() {
            only(arg.as_object(), ARG, || format!("syscalls[{i}].args[{j}]"))?;
        }
    }
    Ok(())
}

/// Compiles a profile for the architecture this process runs on.
pub fn compile(profile: &LinuxSeccomp) -> Result<CompiledFilter, SeccompError> {
    let arch = Arch::running().ok_or(SeccompError::UnsupportedHostArch(std::env::consts::ARCH))?;
    compile_for(profile, arch)
}

/// Compiles a profile for a named architecture (to check a profile for both).
pub fn compile_for(profile: &LinuxSeccomp, arch: Arch) -> Result<CompiledFilter, SeccompError> {
    compile::compile_for(profile, arch)
}

impl CompiledFilter {
    /// Installs this profile's programs in the calling thread. See [`install_all`].
    pub fn install(&self, log_denials: bool) -> Result<(), SeccompError> {
        install_all(&[self], log_denials)
    }

    /// Total BPF instructions over all programs.
    pub fn instruction_count(&self) -> usize {
        self.programs.iter().map(|p| p.bpf.len()).sum()
    }

    /// How many BPF programs the profile became.
    pub fn program_count(&self) -> usize {
        self.programs.len()
    }

    /// BPF instructions of each program, in install order (each must be 1..=4096 for the
    /// kernel to take it; the fuzz targets check that every compiled profile keeps to it).
    pub fn program_lengths(&self) -> Vec<usize> {
        self.programs.iter().map(|p| p.bpf.len()).collect()
    }

    pub fn arch(&self) -> Arch {
        self.arch
    }

    /// Dry run: the seccomp return value (SECCOMP_RET_*) this profile gives a native call
    /// of syscall `nr` with `args`, as the kernel would combine its programs.
    pub fn evaluate(&self, nr: i64, args: [u64; 6]) -> Result<u32, String> {
        evaluate_all(&[self], nr, args)
    }

    /// One line per program, for logs and `stockade` diagnostics.
    pub fn describe(&self) -> Vec<String> {
        self.programs
            .iter()
            .map(|p| {
                format!(
                    "{} filter {}: {} instructions{}",
                    p.role.name(),
                    describe_action(p.ret),
                    p.bpf.len(),
                    if p.log { "" } else { " (never logged)" }
                )
            })
            .collect()
    }
}

/// Dry run over stacked profiles in install order (see [`CompiledFilter::evaluate`]).
pub fn evaluate_all(filters: &[&CompiledFilter], nr: i64, args: [u64; 6]) -> Result<u32, String> {
    let mut results = Vec::new();
    for filter in filters {
        let data = SeccompData {
            nr: nr as i32,
            arch: filter.arch.audit_arch(),
            instruction_pointer: 0,
            args,
        };
        for program in &filter.programs {
            results.push(eval::run(&program.bpf, &data)?);
        }
    }
    Ok(combine(results.into_iter()))
}

/// A seccomp return value in words: `ALLOW`, `ERRNO(1)`, `KILL_PROCESS`, ...
pub fn describe_action(ret: u32) -> String {
    let data = ret & libc::SECCOMP_RET_DATA;
    match ret & libc::SECCOMP_RET_ACTION_FULL {
        libc::SECCOMP_RET_KILL_PROCESS => "KILL_PROCESS".into(),
        libc::SECCOMP_RET_KILL_THREAD => "KILL_THREAD".into(),
        libc::SECCOMP_RET_TRAP => "TRAP".into(),
        libc::SECCOMP_RET_ERRNO => format!("ERRNO({data})"),
        libc::SECCOMP_RET_TRACE => format!("TRACE({data})"),
        libc::SECCOMP_RET_LOG => "LOG".into(),
        libc::SECCOMP_RET_ALLOW => "ALLOW".into(),
        other => format!("{other:#x}"),
    }
}

#[cfg(test)]
mod tests;
