//! OCI `LinuxSeccomp` -> one or more seccompiler BPF programs (see the module docs of
//! [`super`] for why and how a profile is split).

use super::arch::Arch;
use super::{CompiledFilter, Program, Role, SeccompError};
use crate::oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag,
    LinuxSeccompOperator, LinuxSyscall,
};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};
use std::collections::BTreeMap;

const EPERM: u32 = libc::EPERM as u32;
const ENOSYS: u32 = libc::ENOSYS as u32;
/// The kernel clamps SECCOMP_RET_ERRNO data to MAX_ERRNO.
const MAX_ERRNO: u32 = 4095;
/// seccomp_data carries six syscall arguments.
const MAX_ARG_INDEX: usize = 5;
/// x86_64: syscall numbers with this bit set are the x32 ABI (same AUDIT_ARCH as x86_64).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// What a syscall chain of one filter matches: everything, or any of some argument rules.
#[derive(Debug, Clone, PartialEq)]
enum Chain {
    Always,
    AnyOf(Vec<SeccompRule>),
}

impl Chain {
    fn add(&mut self, rule: Option<&SeccompRule>) {
        match (rule, &mut *self) {
            (_, Chain::Always) => {}
            (None, _) => *self = Chain::Always,
            (Some(rule), Chain::AnyOf(rules)) => {
                if !rules.contains(rule) {
                    rules.push(rule.clone());
                }
            }
        }
    }

    fn merge(&mut self, other: &Chain) {
        match other {
            Chain::Always => *self = Chain::Always,
            Chain::AnyOf(rules) => rules.iter().for_each(|r| self.add(Some(r))),
        }
    }

    fn into_rules(self) -> Vec<SeccompRule> {
        match self {
            // seccompiler: an empty rule list matches the syscall unconditionally.
            Chain::Always => Vec::new(),
            Chain::AnyOf(rules) => rules,
        }
    }
}

/// The rules of one action (one exact return value, errno included).
#[derive(Debug)]
struct ActionGroup {
    action: SeccompAction,
    /// Index of the first profile rule with this action: fixes the install order.
    first_rule: usize,
    chains: BTreeMap<i64, Chain>,
}

pub(super) fn compile_for(
    profile: &LinuxSeccomp,
    arch: Arch,
) -> Result<CompiledFilter, SeccompError> {
    compile_with(profile, arch, Search::Ranges)
}

/// How a program finds the syscalls it matches without conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Search {
    /// A binary search over ranges ([`super::dispatch`]).
    Ranges,
    /// seccompiler's chain per syscall, one after another (what the search must agree with).
    #[cfg_attr(not(test), allow(dead_code))]
    Chains,
}

pub(super) fn compile_with(
    profile: &LinuxSeccomp,
    arch: Arch,
    search: Search,
) -> Result<CompiledFilter, SeccompError> {
    let header = check_header(profile, arch)?;
    let default = header.default_action;
    let default_ret = u32::from(default.clone());

    // Group every rule by its exact action value.
    let mut groups: BTreeMap<u32, ActionGroup> = BTreeMap::new();
    for (index, syscall) in profile.syscalls().iter().flatten().enumerate() {
        let rule = RuleRef::new(index, syscall);
        let action = rule_action(&rule)?;
        let condition = rule_conditions(&rule)?;
        let group = groups
            .entry(u32::from(action.clone()))
            .or_insert_with(|| ActionGroup {
                action,
                first_rule: index,
                chains: BTreeMap::new(),
            });
        for name in syscall.names() {
            match resolve(&rule, name, arch)? {
                Some(nr) => group
                    .chains
                    .entry(nr)
                    .or_insert(Chain::AnyOf(Vec::new()))
                    .add(condition.as_ref()),
                None => tracing::debug!(
                    syscall = %name,
                    rule = index,
                    arch = arch.name(),
                    "seccomp: syscall does not exist on this architecture; rule skipped for it"
                ),
            }
        }
    }

    let allow_ret = u32::from(SeccompAction::Allow);
    let mut programs = Vec::new();

    // The default filter: anything a rule names (other than with the default action itself)
    // passes to the action filters; everything else gets the default action.
    if default_ret != allow_ret {
        let mut matched: BTreeMap<i64, Chain> = BTreeMap::new();
        for (ret, group) in &groups {
            if *ret == default_ret {
                continue;
            }
            for (nr, chain) in &group.chains {
                matched
                    .entry(*nr)
                    .or_insert(Chain::AnyOf(Vec::new()))
                    .merge(chain);
            }
        }
        programs.push(build(
            search,
            arch,
            matched,
            default.clone(),
            SeccompAction::Allow,
            Role::Default,
            default_ret,
        )?);
    }

    // One filter per non-ALLOW action. Installed in reverse order of first appearance, so
    // that between two matching rules of equal precedence (say ERRNO(38) and ERRNO(1)) the
    // one listed first in the profile wins: the kernel keeps the most recent filter's data.
    let mut actions: Vec<ActionGroup> = groups
        .into_iter()
        // A group whose names all exist only on the other architecture has nothing to do.
        .filter(|(ret, group)| *ret != allow_ret && !group.chains.is_empty())
        .map(|(_, group)| group)
        .collect();
    actions.sort_by_key(|g| std::cmp::Reverse(g.first_rule));
    for group in actions {
        let ret = u32::from(group.action.clone());
        programs.push(build(
            search,
            arch,
            group.chains,
            SeccompAction::Allow,
            group.action,
            Role::Action,
            ret,
        )?);
    }

    if arch == Arch::X86_64 {
        if let Some(first) = programs.first_mut() {
            guard_x32(first)?;
        }
    }

    Ok(CompiledFilter {
        arch,
        programs,
        log: header.log,
        tsync: header.tsync,
    })
}

struct Header {
    default_action: SeccompAction,
    log: bool,
    tsync: bool,
}

fn check_header(profile: &LinuxSeccomp, arch: Arch) -> Result<Header, SeccompError> {
    if let Some(path) = profile.listener_path() {
        return Err(SeccompError::Unsupported {
            what: format!("listenerPath {}", path.display()),
            why: "SCMP_ACT_NOTIFY (a user-space seccomp agent) is not supported",
        });
    }
    if profile.listener_metadata().is_some() {
        return Err(SeccompError::Unsupported {
            what: "listenerMetadata".into(),
            why: "SCMP_ACT_NOTIFY (a user-space seccomp agent) is not supported",
        });
    }
    let (mut log, mut tsync) = (false, false);
    for flag in profile.flags().iter().flatten() {
        match flag {
            LinuxSeccompFilterFlag::SeccompFilterFlagLog => log = true,
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync => tsync = true,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => {
                return Err(SeccompError::Unsupported {
                    what: "flag SECCOMP_FILTER_FLAG_SPEC_ALLOW".into(),
                    why: "it would turn off the speculative store bypass mitigation",
                })
            }
            LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => {
                return Err(SeccompError::Unsupported {
                    what: "flag SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV".into(),
                    why: "it only applies to SCMP_ACT_NOTIFY, which is not supported",
                })
            }
        }
    }
    if let Some(listed) = profile.architectures() {
        if !listed.is_empty() && !listed.iter().any(|a| arch.is_named_by(*a)) {
            return Err(SeccompError::ArchNotListed {
                running: arch.name(),
                listed: listed
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    let default_action = convert_action(profile.default_action(), profile.default_errno_ret())
        .map_err(|problem| SeccompError::InvalidDefault { problem })?;
    Ok(Header {
        default_action,
        log,
        tsync,
    })
}

/// A profile rule with its position, for error messages.
struct RuleRef<'a> {
    index: usize,
    syscall: &'a LinuxSyscall,
}

impl<'a> RuleRef<'a> {
    fn new(index: usize, syscall: &'a LinuxSyscall) -> Self {
        Self { index, syscall }
    }

    fn error(&self, problem: impl Into<String>) -> SeccompError {
        let names = self.syscall.names();
        let mut shown = names.iter().take(3).cloned().collect::<Vec<_>>().join(", ");
        if names.len() > 3 {
            shown.push_str(&format!(", … ({} names)", names.len()));
        }
        SeccompError::InvalidRule {
            rule: self.index,
            names: shown,
            problem: problem.into(),
        }
    }
}

fn rule_action(rule: &RuleRef) -> Result<SeccompAction, SeccompError> {
    if rule.syscall.names().is_empty() {
        return Err(rule.error("`names` is empty"));
    }
    convert_action(rule.syscall.action(), rule.syscall.errno_ret()).map_err(|p| rule.error(p))
}

/// OCI action (+ errno) -> seccompiler action. The error is a problem description.
fn convert_action(action: LinuxSeccompAction, errno: Option<u32>) -> Result<SeccompAction, String> {
    use LinuxSeccompAction as A;
    let data = |default: u32| -> Result<u32, String> {
        match errno {
            Some(e) if e > MAX_ERRNO => Err(format!("errno {e} is out of range (0..={MAX_ERRNO})")),
            Some(e) => Ok(e),
            None => Ok(default),
        }
    };
    if errno.is_some() && !matches!(action, A::ScmpActErrno | A::ScmpActTrace) {
        return Err(format!(
            "an errno return is only meaningful for SCMP_ACT_ERRNO and SCMP_ACT_TRACE, not {action}"
        ));
    }
    Ok(match action {
        A::ScmpActAllow => SeccompAction::Allow,
        A::ScmpActErrno => SeccompAction::Errno(data(EPERM)?),
        A::ScmpActTrace => SeccompAction::Trace(data(EPERM)?),
        // libseccomp's SCMP_ACT_KILL is SECCOMP_RET_KILL_THREAD.
        A::ScmpActKill | A::ScmpActKillThread => SeccompAction::KillThread,
        A::ScmpActKillProcess => SeccompAction::KillProcess,
        A::ScmpActTrap => SeccompAction::Trap,
        A::ScmpActLog => SeccompAction::Log,
        A::ScmpActNotify => {
            return Err("SCMP_ACT_NOTIFY (a user-space seccomp agent) is not supported".into())
        }
    })
}

/// The rule's argument conditions, ANDed; `None` when it has none (matches always).
fn rule_conditions(rule: &RuleRef) -> Result<Option<SeccompRule>, SeccompError> {
    let args = match rule.syscall.args() {
        Some(args) if !args.is_empty() => args,
        _ => return Ok(None),
    };
    let mut seen = [false; MAX_ARG_INDEX + 1];
    let mut conditions = Vec::with_capacity(args.len());
    for (i, arg) in args.iter().enumerate() {
        let index = arg.index();
        if index > MAX_ARG_INDEX {
            return Err(rule.error(format!(
                "args[{i}]: argument index {index} is out of range (0..={MAX_ARG_INDEX})"
            )));
        }
        // runc ORs conditions that share an index while libseccomp would AND them: refuse
        // rather than pick one meaning silently.
        if std::mem::replace(&mut seen[index], true) {
            return Err(rule.error(format!(
                "args[{i}]: argument {index} is tested twice in one rule; runtimes disagree on \
                 what that means (AND or OR): write one rule per alternative"
            )));
        }
        conditions.push(condition(arg).map_err(|p| rule.error(format!("args[{i}]: {p}")))?);
    }
    SeccompRule::new(conditions)
        .map(Some)
        .map_err(|e| rule.error(e.to_string()))
}

fn condition(arg: &LinuxSeccompArg) -> Result<SeccompCondition, String> {
    use LinuxSeccompOperator as O;
    let value = arg.value();
    let value_two = arg.value_two().unwrap_or(0);
    let op = match arg.op() {
        O::ScmpCmpEq => SeccompCmpOp::Eq,
        O::ScmpCmpNe => SeccompCmpOp::Ne,
        O::ScmpCmpLt => SeccompCmpOp::Lt,
        O::ScmpCmpLe => SeccompCmpOp::Le,
        O::ScmpCmpGt => SeccompCmpOp::Gt,
        O::ScmpCmpGe => SeccompCmpOp::Ge,
        O::ScmpCmpMaskedEq => {
            // OCI: (arg & value) == valueTwo. seccompiler's MaskedEq(mask) with datum d
            // tests (arg & mask) == (d & mask), which is the same only when valueTwo has no
            // bit outside the mask; otherwise the rule could never match.
            if value_two & !value != 0 {
                return Err(format!(
                    "SCMP_CMP_MASKED_EQ with valueTwo {value_two:#x} outside mask {value:#x} \
                     can never match"
                ));
            }
            let index = u8::try_from(arg.index()).map_err(|e| e.to_string())?;
            return SeccompCondition::new(
                index,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(value),
                value_two,
            )
            .map_err(|e| e.to_string());
        }
    };
    if value_two != 0 {
        return Err(format!(
            "valueTwo {value_two:#x} is only meaningful for SCMP_CMP_MASKED_EQ, not {}",
            arg.op()
        ));
    }
    let index = u8::try_from(arg.index()).map_err(|e| e.to_string())?;
    // 64-bit comparisons, as libseccomp does on 64-bit architectures.
    SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value).map_err(|e| e.to_string())
}

/// The syscall number on `arch`; `None` when the name exists only on the other supported
/// architecture or in one of their 32-bit ABIs; an error when none of them knows it (a
/// typo, or a syscall of an architecture Stockade does not run on).
fn resolve(rule: &RuleRef, name: &str, arch: Arch) -> Result<Option<i64>, SeccompError> {
    if let Some(nr) = arch.number(name) {
        return Ok(Some(nr));
    }
    if Arch::ALL.iter().any(|a| a.number(name).is_some()) || super::arch::is_compat_name(name) {
        return Ok(None);
    }
    Err(SeccompError::UnknownSyscall {
        rule: rule.index,
        name: name.to_string(),
    })
}

fn build(
    search: Search,
    arch: Arch,
    chains: BTreeMap<i64, Chain>,
    mismatch: SeccompAction,
    on_match: SeccompAction,
    role: Role,
    ret: u32,
) -> Result<Program, SeccompError> {
    let (front, chains) = match search {
        Search::Ranges => split_unconditional(chains, u32::from(on_match.clone())),
        Search::Chains => (Vec::new(), chains),
    };
    let rules = chains
        .into_iter()
        .map(|(nr, chain)| (nr, chain.into_rules()))
        .collect();
    let describe = super::describe_action(ret);
    let filter =
        SeccompFilter::new(rules, mismatch, on_match, arch.target()).map_err(|source| {
            SeccompError::Backend {
                filter: describe.clone(),
                source,
            }
        })?;
    let mut bpf = BpfProgram::try_from(filter).map_err(|source| SeccompError::Backend {
        filter: describe,
        source,
    })?;
    // A miss falls into seccompiler's chains, which load the number again.
    insert_after_arch_check(&mut bpf, front, role)?;
    // ENOSYS from a rule is a "fall back to the older call" answer (clone3 -> clone), not a
    // denial worth an audit record for every thread a program starts.
    let quiet = role == Role::Action && ret == u32::from(SeccompAction::Errno(ENOSYS));
    Ok(Program {
        bpf,
        ret,
        role,
        log: !quiet,
    })
}

/// The binary search ([`super::dispatch`]) over the syscalls matched without conditions,
/// returning `hit`, and the chains left for seccompiler. When the search cannot be built,
/// no search and every chain.
fn split_unconditional(
    chains: BTreeMap<i64, Chain>,
    hit: u32,
) -> (Vec<seccompiler::sock_filter>, BTreeMap<i64, Chain>) {
    let mut numbers = Vec::new();
    let mut rest = BTreeMap::new();
    for (nr, chain) in chains {
        match (&chain, u32::try_from(nr)) {
            (Chain::Always, Ok(n)) => numbers.push(n),
            _ => {
                rest.insert(nr, chain);
            }
        }
    }
    match super::dispatch::search(&super::dispatch::ranges(numbers.clone()), hit) {
        Some(search) => (search, rest),
        None => {
            rest.extend(numbers.into_iter().map(|n| (i64::from(n), Chain::Always)));
            (Vec::new(), rest)
        }
    }
}

/// Insert `insns` right after seccompiler's architecture check. Nothing jumps across that
/// point: the check's only jump lands on index 3 itself, and seccompiler's own jumps are
/// all forward from there.
fn insert_after_arch_check(
    bpf: &mut BpfProgram,
    insns: Vec<seccompiler::sock_filter>,
    role: Role,
) -> Result<(), SeccompError> {
    // seccompiler starts every program with: LD arch; JEQ AUDIT_ARCH, 1, 0; RET KILL_PROCESS.
    let prologue_ok = bpf.len() >= 3
        && bpf[0].code == (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16
        && bpf[0].k == 4
        && bpf[1].code == (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16
        && bpf[1].jt == 1
        && bpf[1].jf == 0
        && bpf[2].code == (libc::BPF_RET | libc::BPF_K) as u16;
    if !prologue_ok {
        return Err(SeccompError::Internal(
            "seccompiler's program does not start with the expected architecture check",
        ));
    }
    bpf.splice(3..3, insns);
    if bpf.len() > super::BPF_MAX_LEN {
        return Err(SeccompError::TooLarge {
            filter: role.name(),
            len: bpf.len(),
        });
    }
    Ok(())
}

/// x86_64 only: answer every x32-ABI syscall number with ENOSYS (as a kernel built without
/// x32 does), right after seccompiler's architecture check. x32 calls carry
/// AUDIT_ARCH_X86_64 too, so without this a profile whose default is ALLOW could be
/// sidestepped by `mount | 0x40000000` on kernels with x32 enabled.
fn guard_x32(program: &mut Program) -> Result<(), SeccompError> {
    use seccompiler::sock_filter;
    let stmt = |code: u32, k: u32| sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let guard = vec![
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0),
        sock_filter {
            code: (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: X32_SYSCALL_BIT,
        },
        stmt(
            libc::BPF_RET | libc::BPF_K,
            u32::from(SeccompAction::Errno(ENOSYS)),
        ),
    ];
    insert_after_arch_check(&mut program.bpf, guard, program.role)
}
