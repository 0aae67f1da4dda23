//! Unit tests of the compiler, run against the BPF interpreter in `eval` (no install).

use super::*;
use proptest::prelude::*;

const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const fn errno(e: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | e as u32
}

fn profile(json: &str) -> LinuxSeccomp {
    serde_json::from_str(json).unwrap()
}

fn compiled(json: &str) -> CompiledFilter {
    compile_for(&profile(json), Arch::X86_64).unwrap()
}

fn compile_err(json: &str) -> String {
    compile_for(&profile(json), Arch::X86_64)
        .unwrap_err()
        .to_string()
}

fn default_profile_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles/seccomp/default.json")
}

fn nr(arch: Arch, name: &str) -> i64 {
    arch.number(name)
        .unwrap_or_else(|| panic!("{name} on {arch:?}"))
}

fn eval(f: &CompiledFilter, name: &str, args: [u64; 6]) -> u32 {
    f.evaluate(nr(f.arch(), name), args).unwrap()
}

fn eval0(f: &CompiledFilter, name: &str) -> u32 {
    eval(f, name, [0; 6])
}

const NEVER_ALLOWED: &[&str] = &[
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "mount",
    "umount2",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "open_tree",
    "move_mount",
    "mount_setattr",
    "unshare",
    "setns",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "pivot_root",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "clock_adjtime",
    "open_by_handle_at",
    "syslog",
    "sethostname",
];

// ---- the shipped default profile ---------------------------------------------------

#[test]
fn default_profile_loads_and_compiles_for_both_arches() {
    let p = load_file(&default_profile_path()).unwrap();
    for arch in Arch::ALL {
        let f = compile_for(&p, arch).unwrap();
        assert_eq!(f.arch(), arch);
        eprintln!(
            "{arch:?}: {} instructions {:?}",
            f.instruction_count(),
            f.describe()
        );
        assert_eq!(f.program_count(), 3, "{:?}", f.describe());
        // seccompiler's chains alone came to 1,942 on x86_64; the range search keeps the
        // install (cBPF -> eBPF conversion and JIT) and each syscall's path short.
        let chains = compile::compile_with(&p, arch, compile::Search::Chains).unwrap();
        assert!(
            f.instruction_count() * 4 < chains.instruction_count(),
            "{arch:?}: {} instructions, chains alone {}",
            f.instruction_count(),
            chains.instruction_count()
        );
    }
}

// ---- the range search agrees with seccompiler's chains ------------------------------

/// The argument values worth trying against `profile`: each value a rule compares with,
/// one either side, and the extremes.
fn interesting_args(profile: &LinuxSeccomp) -> Vec<u64> {
    let mut values = vec![0, 1, u64::MAX, u64::from(u32::MAX), 1 << 32];
    for arg in profile
        .syscalls()
        .iter()
        .flatten()
        .flat_map(|r| r.args().iter().flatten())
    {
        for v in [arg.value(), arg.value_two().unwrap_or(0)] {
            values.extend([v, v.wrapping_add(1), v.wrapping_sub(1), v | arg.value()]);
        }
    }
    values.sort_unstable();
    values.dedup();
    values
}

/// Every syscall number a table knows (and some no table does), x32 numbers, -1, and each
/// interesting argument value in every position: the same verdict with and without the
/// range search.
fn assert_search_agrees_with_chains(profile: &LinuxSeccomp) {
    for arch in Arch::ALL {
        let (ranges, chains) = match (
            compile::compile_with(profile, arch, compile::Search::Ranges),
            compile::compile_with(profile, arch, compile::Search::Chains),
        ) {
            (Ok(r), Ok(c)) => (r, c),
            (r, c) => {
                let (r, c) = (r.map(|_| ()), c.map(|_| ()));
                assert_eq!(r.is_ok(), c.is_ok(), "{arch:?}: {r:?} vs {c:?}");
                continue;
            }
        };
        let values = interesting_args(profile);
        let numbers = (-1..1100).chain([0x4000_0000, 0x4000_0001, 0x4000_0000 | 59, 0x7fff_ffff]);
        for nr in numbers {
            for v in &values {
                for args in [[*v; 6], [*v, 0, 0, 0, 0, 0], [0, *v, *v, 0, 0, 0]] {
                    assert_eq!(
                        ranges.evaluate(nr, args).unwrap(),
                        chains.evaluate(nr, args).unwrap(),
                        "{arch:?}: nr {nr}, args {args:x?}"
                    );
                }
            }
        }
    }
}

#[test]
fn range_search_agrees_with_chains_on_the_shipped_profiles() {
    let dir = default_profile_path().parent().unwrap().to_path_buf();
    for name in ["default.json", "strict.json"] {
        assert_search_agrees_with_chains(&load_file(&dir.join(name)).unwrap());
    }
}

#[test]
fn range_search_agrees_with_chains_on_mixed_actions_and_defaults() {
    let rules = r#"[
        {"names":["read","write","open","close","stat","fstat"],"action":"SCMP_ACT_ALLOW"},
        {"names":["getpid"],"action":"SCMP_ACT_ALLOW"},
        {"names":["mount","umount2"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
        {"names":["clone"],"action":"SCMP_ACT_ALLOW",
         "args":[{"index":0,"value":268435456,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
        {"names":["personality"],"action":"SCMP_ACT_ALLOW",
         "args":[{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
        {"names":["ptrace","kexec_load"],"action":"SCMP_ACT_KILL_PROCESS"},
        {"names":["clone3"],"action":"SCMP_ACT_ERRNO","errnoRet":38},
        {"names":["getppid","gettid","getuid"],"action":"SCMP_ACT_LOG"},
        {"names":["socket"],"action":"SCMP_ACT_ERRNO",
         "args":[{"index":0,"value":16,"op":"SCMP_CMP_EQ"}]}
    ]"#;
    for default in [
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_KILL",
        "SCMP_ACT_LOG",
    ] {
        let json = format!(r#"{{"defaultAction":"{default}","syscalls":{rules}}}"#);
        assert_search_agrees_with_chains(&profile(&json));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Random sets of syscall numbers, allowed outright or under a condition.
    #[test]
    fn range_search_agrees_with_chains_on_random_profiles(
        allowed in proptest::collection::vec(0usize..360, 0..200),
        conditional in proptest::collection::vec((0usize..360, 0u64..4), 0..8),
        denied in proptest::collection::vec(0usize..360, 0..20),
    ) {
        let names: Vec<&str> = syscalls::x86_64::Sysno::iter().map(|s| s.name()).collect();
        let pick = |i: usize| names[i % names.len()];
        let list = |v: &[usize]| v.iter().map(|i| format!("{:?}", pick(*i))).collect::<Vec<_>>().join(",");
        let mut rules = vec![format!(r#"{{"names":[{}],"action":"SCMP_ACT_ALLOW"}}"#, list(&allowed))];
        for (i, value) in &conditional {
            rules.push(format!(
                r#"{{"names":[{:?}],"action":"SCMP_ACT_ALLOW","args":[{{"index":1,"value":{value},"op":"SCMP_CMP_EQ"}}]}}"#,
                pick(*i)
            ));
        }
        rules.push(format!(r#"{{"names":[{}],"action":"SCMP_ACT_ERRNO","errnoRet":1}}"#, list(&denied)));
        let rules: Vec<String> = rules.into_iter().filter(|r| !r.contains("[]")).collect();
        let json = format!(r#"{{"defaultAction":"SCMP_ACT_ERRNO","errnoRet":38,"syscalls":[{}]}}"#, rules.join(","));
        assert_search_agrees_with_chains(&profile(&json));
    }
}

#[test]
fn default_profile_verdicts() {
    let p = load_file(&default_profile_path()).unwrap();
    for arch in Arch::ALL {
        let f = compile_for(&p, arch).unwrap();
        for name in [
            "getpid", "read", "write", "openat", "execve", "futex", "ptrace",
        ] {
            assert_eq!(eval0(&f, name), ALLOW, "{name} on {arch:?}");
        }
        for name in NEVER_ALLOWED {
            assert_eq!(eval0(&f, name), errno(libc::EPERM), "{name} on {arch:?}");
            assert_eq!(eval(&f, name, [u64::MAX; 6]), errno(libc::EPERM), "{name}");
        }
        assert_eq!(eval0(&f, "clone3"), errno(libc::ENOSYS));
        // ioctl: allowed, except TIOCSTI (whatever the upper half of the command holds).
        assert_eq!(eval(&f, "ioctl", [0, libc::FIONREAD, 0, 0, 0, 0]), ALLOW);
        for cmd in [libc::TIOCSTI, 0x1_0000_0000 | libc::TIOCSTI] {
            assert_eq!(eval(&f, "ioctl", [0, cmd, 0, 0, 0, 0]), errno(libc::EPERM));
        }
        // fork-like and thread-like clones pass, any namespace flag does not.
        let sigchld = libc::SIGCHLD as u64;
        let thread = (libc::CLONE_VM
            | libc::CLONE_FS
            | libc::CLONE_FILES
            | libc::CLONE_SIGHAND
            | libc::CLONE_THREAD
            | libc::CLONE_SYSVSEM
            | libc::CLONE_SETTLS
            | libc::CLONE_PARENT_SETTID
            | libc::CLONE_CHILD_CLEARTID) as u64;
        assert_eq!(eval(&f, "clone", [sigchld, 0, 0, 0, 0, 0]), ALLOW);
        assert_eq!(eval(&f, "clone", [thread, 0, 0, 0, 0, 0]), ALLOW);
        for ns in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWCGROUP,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
        ] {
            let flags = sigchld | ns as u64;
            assert_eq!(
                eval(&f, "clone", [flags, 0, 0, 0, 0, 0]),
                errno(libc::EPERM)
            );
        }
        // The kernel reads the low 32 bits: musl's personality(-1) is a query too.
        for persona in [
            0u64,
            8,
            0x20000,
            0x20008,
            0xffff_ffff,
            u64::MAX,
            0x1_0000_0008,
        ] {
            assert_eq!(eval(&f, "personality", [persona, 0, 0, 0, 0, 0]), ALLOW);
        }
        for persona in [
            0x0040_0000u64, /* READ_IMPLIES_EXEC */
            0x0004_0000,
            0x1_0040_0000,
        ] {
            assert_eq!(
                eval(&f, "personality", [persona, 0, 0, 0, 0, 0]),
                errno(libc::EPERM)
            );
        }
        for domain in [
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
        ] {
            assert_eq!(eval(&f, "socket", [domain as u64, 1, 0, 0, 0, 0]), ALLOW);
        }
        // AF_ALG, AF_VSOCK, later families, and AF_VSOCK with junk in the upper half.
        for domain in [38u64, 40, 44, 0x1_0000_0028, u64::MAX] {
            assert_eq!(
                eval(&f, "socket", [domain, 1, 0, 0, 0, 0]),
                errno(libc::EPERM)
            );
        }
    }
}

#[test]
fn default_profile_allows_no_never_allowed_syscall_by_any_rule() {
    let p = load_file(&default_profile_path()).unwrap();
    for rule in p.syscalls().iter().flatten() {
        if rule.action() == crate::oci_spec::runtime::LinuxSeccompAction::ScmpActAllow {
            for name in rule.names() {
                assert!(!NEVER_ALLOWED.contains(&name.as_str()), "{name} is allowed");
            }
        }
    }
}

#[test]
fn default_profile_x32_and_unknown_numbers() {
    let f = compile_for(&load_file(&default_profile_path()).unwrap(), Arch::X86_64).unwrap();
    let x32_getpid = 0x4000_0000 | 39;
    assert_eq!(f.evaluate(x32_getpid, [0; 6]).unwrap(), errno(libc::ENOSYS));
    assert_eq!(f.evaluate(-1, [0; 6]).unwrap(), errno(libc::ENOSYS));
    assert_eq!(f.evaluate(1000, [0; 6]).unwrap(), errno(libc::EPERM));
}

#[test]
fn x32_guard_also_protects_an_allow_by_default_profile() {
    let f = compiled(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["mount"],"action":"SCMP_ACT_ERRNO"}]}"#,
    );
    assert_eq!(eval0(&f, "mount"), errno(libc::EPERM));
    assert_eq!(
        f.evaluate(0x4000_0000 | 165, [0; 6]).unwrap(),
        errno(libc::ENOSYS)
    );
    assert_eq!(eval0(&f, "getpid"), ALLOW);
}

#[test]
fn enosys_filter_is_never_logged() {
    let f = compiled(&std::fs::read_to_string(default_profile_path()).unwrap());
    let lines = f.describe();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("ERRNO(38)") && l.contains("never logged")),
        "{lines:?}"
    );
    assert!(lines
        .iter()
        .any(|l| l.starts_with("default filter ERRNO(1)") && !l.contains("never")));
}

// ---- actions ------------------------------------------------------------------------

fn one_rule(action: &str, extra: &str) -> CompiledFilter {
    compiled(&format!(
        r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {{"names":["getpid","read"],"action":"SCMP_ACT_ALLOW"}},
            {{"names":["getcwd"],"action":"{action}"{extra}}}]}}"#
    ))
}

#[test]
fn each_action() {
    let cases = [
        ("SCMP_ACT_ALLOW", "", ALLOW),
        ("SCMP_ACT_ERRNO", "", errno(libc::EPERM)),
        ("SCMP_ACT_ERRNO", r#","errnoRet":13"#, errno(libc::EACCES)),
        ("SCMP_ACT_ERRNO", r#","errnoRet":0"#, errno(0)),
        ("SCMP_ACT_KILL", "", libc::SECCOMP_RET_KILL_THREAD),
        ("SCMP_ACT_KILL_THREAD", "", libc::SECCOMP_RET_KILL_THREAD),
        ("SCMP_ACT_KILL_PROCESS", "", libc::SECCOMP_RET_KILL_PROCESS),
        ("SCMP_ACT_TRAP", "", libc::SECCOMP_RET_TRAP),
        ("SCMP_ACT_LOG", "", libc::SECCOMP_RET_LOG),
        (
            "SCMP_ACT_TRACE",
            r#","errnoRet":7"#,
            libc::SECCOMP_RET_TRACE | 7,
        ),
    ];
    for (action, extra, want) in cases {
        let f = one_rule(action, extra);
        assert_eq!(
            eval0(&f, "getcwd"),
            want,
            "{action}{extra}: {:?}",
            f.describe()
        );
        assert_eq!(eval0(&f, "getpid"), ALLOW, "{action}");
        assert_eq!(eval0(&f, "write"), errno(libc::EPERM), "{action}");
    }
}

#[test]
fn each_default_action() {
    let cases = [
        (r#""SCMP_ACT_ERRNO""#, errno(libc::EPERM)),
        (
            r#""SCMP_ACT_ERRNO","defaultErrnoRet":38"#,
            errno(libc::ENOSYS),
        ),
        (r#""SCMP_ACT_KILL_PROCESS""#, libc::SECCOMP_RET_KILL_PROCESS),
        (r#""SCMP_ACT_KILL""#, libc::SECCOMP_RET_KILL_THREAD),
        (r#""SCMP_ACT_TRAP""#, libc::SECCOMP_RET_TRAP),
        (r#""SCMP_ACT_LOG""#, libc::SECCOMP_RET_LOG),
        (r#""SCMP_ACT_ALLOW""#, ALLOW),
    ];
    for (default, want) in cases {
        let f = compiled(&format!(
            r#"{{"defaultAction":{default},"syscalls":[
                {{"names":["getpid"],"action":"SCMP_ACT_ALLOW"}},
                {{"names":["mount"],"action":"SCMP_ACT_ERRNO","errnoRet":1}}]}}"#
        ));
        assert_eq!(eval0(&f, "write"), want, "{default}");
        assert_eq!(eval0(&f, "getpid"), ALLOW, "{default}");
        assert_eq!(eval0(&f, "mount"), errno(libc::EPERM), "{default}");
    }
}

#[test]
fn allow_everything_is_no_program() {
    let f = compiled(r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#);
    assert_eq!(f.program_count(), 0);
    assert_eq!(eval0(&f, "mount"), ALLOW);
}

#[test]
fn most_restrictive_matching_rule_wins() {
    let f = compiled(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["getcwd","getpid"],"action":"SCMP_ACT_ALLOW"},
            {"names":["getcwd"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
            {"names":["getpid"],"action":"SCMP_ACT_LOG"},
            {"names":["getcwd"],"action":"SCMP_ACT_ERRNO","errnoRet":2},
            {"names":["getcwd"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
    );
    // ERRNO beats ALLOW; among ERRNOs the rule listed first wins.
    assert_eq!(eval0(&f, "getcwd"), errno(libc::EACCES));
    assert_eq!(eval0(&f, "getpid"), libc::SECCOMP_RET_LOG);
}

#[test]
fn explicit_default_action_rule_beats_an_allow_rule() {
    let f = compiled(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["mount","getpid"],"action":"SCMP_ACT_ALLOW"},
            {"names":["mount"],"action":"SCMP_ACT_ERRNO"}]}"#,
    );
    assert_eq!(eval0(&f, "mount"), errno(libc::EPERM));
    assert_eq!(eval0(&f, "getpid"), ALLOW);
}

#[test]
fn failed_condition_falls_back_to_the_default_action() {
    let f = compiled(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"syscalls":[
            {"names":["getcwd"],"action":"SCMP_ACT_ERRNO","errnoRet":38,
             "args":[{"index":1,"value":5,"op":"SCMP_CMP_EQ"}]},
            {"names":["read"],"action":"SCMP_ACT_ALLOW",
             "args":[{"index":0,"value":3,"op":"SCMP_CMP_LT"}]}]}"#,
    );
    assert_eq!(eval(&f, "getcwd", [0, 5, 0, 0, 0, 0]), errno(libc::ENOSYS));
    assert_eq!(eval(&f, "getcwd", [0, 6, 0, 0, 0, 0]), errno(libc::EPERM));
    assert_eq!(eval(&f, "read", [2, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(eval(&f, "read", [3, 0, 0, 0, 0, 0]), errno(libc::EPERM));
}

#[test]
fn conditions_of_one_rule_are_anded_rules_are_ored() {
    let f = compiled(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["read"],"action":"SCMP_ACT_ALLOW","args":[
                {"index":0,"value":1,"op":"SCMP_CMP_EQ"},
                {"index":2,"value":100,"op":"SCMP_CMP_LE"}]},
            {"names":["read"],"action":"SCMP_ACT_ALLOW","args":[
                {"index":0,"value":7,"op":"SCMP_CMP_EQ"}]}]}"#,
    );
    assert_eq!(eval(&f, "read", [1, 0, 100, 0, 0, 0]), ALLOW);
    assert_eq!(eval(&f, "read", [1, 0, 101, 0, 0, 0]), errno(libc::EPERM));
    assert_eq!(eval(&f, "read", [7, 0, 9999, 0, 0, 0]), ALLOW);
    assert_eq!(eval(&f, "read", [2, 0, 0, 0, 0, 0]), errno(libc::EPERM));
}

#[test]
fn unconditional_rule_subsumes_conditional_ones() {
    let f = compiled(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
            {"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]},
            {"names":["read"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    assert_eq!(eval(&f, "read", [9, 0, 0, 0, 0, 0]), ALLOW);
}

#[test]
fn stacked_pod_profile_narrows_and_cannot_widen() {
    let default = compile_for(&load_file(&default_profile_path()).unwrap(), Arch::X86_64).unwrap();
    let pod = compiled(
        r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
            {"names":["getcwd"],"action":"SCMP_ACT_ERRNO","errnoRet":13},
            {"names":["mount","bpf"],"action":"SCMP_ACT_ALLOW"}]}"#,
    );
    let stack = [&default, &pod];
    let v = |name: &str| evaluate_all(&stack, nr(Arch::X86_64, name), [0; 6]).unwrap();
    assert_eq!(v("getcwd"), errno(libc::EACCES));
    assert_eq!(v("mount"), errno(libc::EPERM));
    assert_eq!(v("bpf"), errno(libc::EPERM));
    assert_eq!(v("getpid"), ALLOW);
    assert_eq!(v("clone3"), errno(libc::ENOSYS));
}

// ---- operators ----------------------------------------------------------------------

fn op_filter(op: &str, value: u64, value_two: Option<u64>) -> CompiledFilter {
    let two = value_two
        .map(|v| format!(r#","valueTwo":{v}"#))
        .unwrap_or_default();
    compiled(&format!(
        r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{{"names":["read"],
            "action":"SCMP_ACT_ALLOW","args":[{{"index":3,"value":{value},"op":"{op}"{two}}}]}}]}}"#
    ))
}

fn reference(op: &str, arg: u64, value: u64, value_two: u64) -> bool {
    match op {
        "SCMP_CMP_EQ" => arg == value,
        "SCMP_CMP_NE" => arg != value,
        "SCMP_CMP_LT" => arg < value,
        "SCMP_CMP_LE" => arg <= value,
        "SCMP_CMP_GT" => arg > value,
        "SCMP_CMP_GE" => arg >= value,
        "SCMP_CMP_MASKED_EQ" => arg & value == value_two,
        _ => unreachable!(),
    }
}

const OPS: [&str; 6] = [
    "SCMP_CMP_EQ",
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_GT",
    "SCMP_CMP_GE",
];

fn check_op(op: &str, value: u64, value_two: u64, arg: u64) {
    let two = (op == "SCMP_CMP_MASKED_EQ").then_some(value_two);
    let f = op_filter(op, value, two);
    let want = if reference(op, arg, value, value_two) {
        ALLOW
    } else {
        errno(libc::EPERM)
    };
    assert_eq!(
        eval(&f, "read", [0, 0, 0, arg, 0, 0]),
        want,
        "{arg:#x} {op} {value:#x}/{value_two:#x}"
    );
}

#[test]
fn each_operator_at_64_bit_boundaries() {
    let interesting = [
        0u64,
        1,
        4,
        5,
        6,
        0xffff_ffff,
        0x1_0000_0000,
        0x1_0000_0004,
        0x1_0000_0005,
        0x1_0000_0006,
        0x2_0000_0005,
        0xffff_ffff_ffff_fffe,
        u64::MAX,
    ];
    for op in OPS {
        for value in interesting {
            for arg in interesting {
                check_op(op, value, 0, arg);
            }
        }
    }
    for (mask, want) in [
        (0x7E02_0000u64, 0u64),
        (0xff, 0x11),
        (0xf_0000_00f0, 0x1_0000_0010),
    ] {
        for arg in interesting
            .iter()
            .chain(&[0x11, 0x111, 0x1_0000_0010, 0x2_0002_0000])
        {
            check_op("SCMP_CMP_MASKED_EQ", mask, want, *arg);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn operators_agree_with_64_bit_reference(op in 0usize..7, value: u64, arg: u64, hi in 0u64..4) {
        // Bias some arguments close to the value, where the boundaries are.
        let arg = if hi == 0 { value.wrapping_add(arg % 3).wrapping_sub(1) } else { arg };
        if op == 6 {
            check_op("SCMP_CMP_MASKED_EQ", value, arg & value, arg ^ (hi << 32));
        } else {
            check_op(OPS[op], value, 0, arg);
        }
    }
}

// ---- errors -------------------------------------------------------------------------

#[test]
fn unsupported_things_are_errors_naming_the_problem() {
    let cases: &[(&str, &[&str])] = &[
        (
            r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#,
            &["defaultAction", "NOTIFY"],
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_NOTIFY"}]}"#,
            &["syscalls[0]", "getpid", "NOTIFY"],
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","listenerPath":"/run/agent.sock"}"#,
            &["listenerPath"],
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","listenerMetadata":"x"}"#,
            &["listenerMetadata"],
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","flags":["SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}"#,
            &["SPEC_ALLOW"],
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","flags":["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}"#,
            &["WAIT_KILLABLE_RECV"],
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ALLOW"},
            {"names":["read"],"action":"SCMP_ACT_ALLOW","args":[{"index":6,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
            &["syscalls[1]", "read", "index 6"],
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[
            {"index":0,"value":1,"op":"SCMP_CMP_GE"},{"index":0,"value":9,"op":"SCMP_CMP_LE"}]}]}"#,
            &["syscalls[0]", "argument 0 is tested twice"],
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ALLOW"},
            {"names":["getpid","frobnicate"],"action":"SCMP_ACT_ALLOW"}]}"#,
            &["syscalls[1]", "`frobnicate`", "unknown"],
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_AARCH64","SCMP_ARCH_ARM"]}"#,
            &["SCMP_ARCH_AARCH64", "x86_64"],
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ALLOW","errnoRet":1}]}"#,
            &["syscalls[0]", "errno", "SCMP_ACT_ALLOW"],
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_KILL","defaultErrnoRet":1}"#,
            &["defaultAction", "errno"],
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ERRNO","errnoRet":5000}]}"#,
            &["syscalls[0]", "5000", "out of range"],
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[
            {"index":0,"value":1,"valueTwo":2,"op":"SCMP_CMP_EQ"}]}]}"#,
            &["syscalls[0]", "valueTwo", "MASKED_EQ"],
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW","args":[
            {"index":0,"value":240,"valueTwo":256,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#,
            &["syscalls[0]", "never match"],
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":[],"action":"SCMP_ACT_ALLOW"}]}"#,
            &["syscalls[0]", "`names` is empty"],
        ),
    ];
    for (json, needles) in cases {
        let message = compile_err(json);
        for needle in *needles {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
    }
}

#[test]
fn tolerated_inputs() {
    // valueTwo 0 on ordinary operators (old moby profiles), other-arch names, native and
    // secondary architectures, a 32-bit-only name is still an error.
    let f = compiled(
        r#"{"defaultAction":"SCMP_ACT_ERRNO",
            "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32"],
            "flags":["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls":[{"names":["read","renameat"],"action":"SCMP_ACT_ALLOW",
              "args":[{"index":0,"value":1,"valueTwo":0,"op":"SCMP_CMP_EQ"}]}]}"#,
    );
    assert_eq!(eval(&f, "read", [1, 0, 0, 0, 0, 0]), ALLOW);
    let arm_only = r#"{"defaultAction":"SCMP_ACT_ERRNO","architectures":["SCMP_ARCH_NATIVE"],
        "syscalls":[{"names":["arch_prctl","getpid"],"action":"SCMP_ACT_ALLOW"}]}"#;
    let on_arm = compile_for(&profile(arm_only), Arch::Aarch64).unwrap();
    assert_eq!(eval0(&on_arm, "getpid"), ALLOW);
    // A rule whose only name does not exist here compiles to no program at all.
    let x86_only = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
        {"names":["arch_prctl"],"action":"SCMP_ACT_ERRNO"}]}"#;
    assert_eq!(
        compile_for(&profile(x86_only), Arch::Aarch64)
            .unwrap()
            .program_count(),
        0
    );
    assert_eq!(
        compile_for(&profile(x86_only), Arch::X86_64)
            .unwrap()
            .program_count(),
        1
    );
    // s390 and riscv calls are not skipped: Stockade does not know them at all.
    assert!(compile_err(
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["s390_runtime_instr"],"action":"SCMP_ACT_ALLOW"}]}"#
    )
    .contains("`s390_runtime_instr` is unknown"));
}

#[test]
fn filter_compiled_for_another_arch_is_not_installed() {
    let other = if Arch::running() == Some(Arch::X86_64) {
        Arch::Aarch64
    } else {
        Arch::X86_64
    };
    let f = compile_for(&profile(r#"{"defaultAction":"SCMP_ACT_ERRNO"}"#), other).unwrap();
    // Refused before anything is changed (no no_new_privs, no filter), so safe in-process.
    assert!(matches!(
        f.install(false),
        Err(SeccompError::WrongArch { .. })
    ));
}

// ---- load_file ----------------------------------------------------------------------

#[test]
fn load_file_errors_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let e = load_file(&missing).unwrap_err().to_string();
    assert!(
        e.contains("missing.json") && e.contains("cannot read"),
        "{e}"
    );

    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        "{\n  \"defaultAction\": \"SCMP_ACT_ERRNO\",\n  \"syscalls\": [\n",
    )
    .unwrap();
    let e = load_file(&bad).unwrap_err().to_string();
    assert!(e.contains("bad.json") && e.contains("line"), "{e}");

    let wrong = dir.path().join("wrong.json");
    std::fs::write(&wrong, r#"{"defaultAction":"SCMP_ACT_DENY"}"#).unwrap();
    let e = load_file(&wrong).unwrap_err().to_string();
    assert!(
        e.contains("wrong.json") && e.contains("SCMP_ACT_DENY"),
        "{e}"
    );
    let rule = dir.path().join("rule.json");
    std::fs::write(
        &rule,
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_ALLOW"},
            {"names":["getpid"],"action":"SCMP_ACT_EXPLODE"}]}"#,
    )
    .unwrap();
    let e = load_file(&rule).unwrap_err().to_string();
    assert!(
        e.contains("rule.json") && e.contains("key `syscalls[1].action`: unknown variant"),
        "{e}"
    );

    let flag = dir.path().join("flag.json");
    std::fs::write(
        &flag,
        r#"{"defaultAction":"SCMP_ACT_ERRNO","flags":["SECCOMP_FILTER_FLAG_NEW"]}"#,
    )
    .unwrap();
    let e = load_file(&flag).unwrap_err().to_string();
    assert!(
        e.contains("flag.json") && e.contains("SECCOMP_FILTER_FLAG_NEW"),
        "{e}"
    );

    let moby = dir.path().join("moby.json");
    std::fs::write(
        &moby,
        r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["getpid"],"action":"SCMP_ACT_ALLOW"},
            {"names":["mount"],"action":"SCMP_ACT_ALLOW","includes":{"caps":["CAP_SYS_ADMIN"]}}]}"#,
    )
    .unwrap();
    let e = load_file(&moby).unwrap_err().to_string();
    assert!(
        e.contains("moby.json") && e.contains("`includes`") && e.contains("syscalls[1]"),
        "{e}"
    );

    let ok = dir.path().join("ok.json");
    std::fs::write(
        &ok,
        r#"{"comment":"x","defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"comment":"y","names":["getpid"],"action":"SCMP_ACT_ALLOW"}]}"#,
    )
    .unwrap();
    assert_eq!(
        load_file(&ok).unwrap().syscalls().as_ref().unwrap().len(),
        1
    );
}

#[test]
fn multi_abi_profiles_like_containerds_runtime_default_compile() {
    // containerd's RuntimeDefault (amd64 and arm64 flavours) lists 32-bit names next to
    // native ones, `"args": []`, valueTwo 0 and secondary architectures.
    let json = r#"{"defaultAction":"SCMP_ACT_ERRNO",
        "architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86","SCMP_ARCH_X32","SCMP_ARCH_ARM","SCMP_ARCH_AARCH64"],
        "syscalls":[
          {"names":["read","_llseek","chown32","mmap2","socketcall","waitpid","ipc","epoll_ctl_old",
                     "clock_gettime64","futex_time64","arch_prctl","newfstatat","fstatat64"],
           "action":"SCMP_ACT_ALLOW","args":[]},
          {"names":["arm_fadvise64_64","arm_sync_file_range","breakpoint","cacheflush","set_tls"],
           "action":"SCMP_ACT_ALLOW","args":[]},
          {"names":["clone"],"action":"SCMP_ACT_ALLOW",
           "args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]}]}"#;
    for arch in Arch::ALL {
        let f = compile_for(&profile(json), arch).unwrap();
        assert_eq!(eval0(&f, "read"), ALLOW);
        assert_eq!(eval0(&f, "newfstatat"), ALLOW);
        assert_eq!(eval0(&f, "write"), errno(libc::EPERM));
        assert_eq!(
            eval(&f, "clone", [libc::CLONE_NEWNS as u64, 0, 0, 0, 0, 0]),
            errno(libc::EPERM)
        );
    }
}
