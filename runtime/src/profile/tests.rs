use super::*;

#[test]
fn byte_sizes() {
    let t = |s: &str| parse_byte_size(&ByteSize::Text(s.into()));
    assert_eq!(t("512Mi"), Ok(512 << 20));
    assert_eq!(t("2Gi"), Ok(2 << 30));
    assert_eq!(t("64MiB"), Ok(64 << 20));
    assert_eq!(t("1G"), Ok(1_000_000_000));
    assert_eq!(t("4096"), Ok(4096));
    assert!(t("12 parsecs").is_err());
    assert!(t("Mi").is_err());
    assert!(t("99999999999Ti").is_err());
}

#[test]
fn capability_names_with_and_without_prefix() {
    assert_eq!(parse_capability("CHOWN"), Some(Capability::Chown));
    assert_eq!(
        parse_capability("cap_sys_admin"),
        Some(Capability::SysAdmin)
    );
    assert_eq!(parse_capability("CAP_FLY"), None);
}

/// The shipped default profile with `from` replaced by `to` (and its seccomp file
/// absolute, or replaced by `seccomp` written next to it), parsed.
fn variant(from: &str, to: &str, seccomp: Option<&str>) -> Result<Profile, ProfileError> {
    let dir = tempfile::tempdir().unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
    let seccomp_file = match seccomp {
        Some(json) => {
            let f = dir.path().join("seccomp.json");
            std::fs::write(&f, json).unwrap();
            f
        }
        None => shipped.join("seccomp/default.json"),
    };
    let text = std::fs::read_to_string(shipped.join("default.toml")).unwrap();
    assert!(text.contains(from), "{from}");
    let text = text.replacen(from, to, 1).replace(
        "profile = \"seccomp/default.json\"",
        &format!("profile = {:?}", seccomp_file),
    );
    Profile::parse(&text, &dir.path().join("bad.toml"))
}

#[test]
fn absurd_profiles_name_the_key_and_the_problem() {
    let cases: &[(&str, &str, &str, &str)] = &[
        ("pids = 1024", "pids = = 1024", "", "(line "),
        (
            "pids = 1024",
            "pids = 1024\nswap = 1",
            "cgroups.defaults.swap",
            "unknown field",
        ),
        (
            "pids = 1024",
            "pids = \"lots\"",
            "cgroups.defaults.pids",
            "invalid type",
        ),
        (
            "memory = \"8Gi\"",
            "memory = -1",
            "cgroups.ceilings.memory",
            "below the minimum",
        ),
        (
            "memory = \"8Gi\"",
            "memory = \"-8Gi\"",
            "cgroups.ceilings.memory",
            "not a size",
        ),
        (
            "pids = 8192",
            "pids = 0",
            "cgroups.ceilings.pids",
            "at least 1",
        ),
        (
            "pids = 1024",
            "pids = 0",
            "cgroups.defaults.pids",
            "at least 1",
        ),
        (
            "ids_per_pod = 65536",
            "ids_per_pod = 0",
            "userns.ids_per_pod",
            "too small",
        ),
        (
            "ids_per_pod = 65536",
            "ids_per_pod = 134217728",
            "userns.ids_per_pod",
            "larger than the whole pool",
        ),
        (
            "size = 67108864",
            "size = 0",
            "userns.size",
            "non-zero multiple",
        ),
        (
            "\"CHOWN\",",
            "\"CHOWN\", \"CAP_FLY\",",
            "capabilities.allow[1]",
            "unknown capability \"CAP_FLY\"",
        ),
        (
            "cpu = 2.0",
            "cpu = -1.0",
            "cgroups.ceilings.cpu",
            "not between",
        ),
    ];
    for (from, to, key, problem) in cases {
        let e = variant(from, to, None).unwrap_err();
        assert_eq!(e.key, *key, "{to}: {e}");
        assert!(e.problem.contains(problem), "{to}: {e}");
        let text = e.to_string();
        assert!(
            text.contains("bad.toml") && !text.contains('\n'),
            "{text:?}"
        );
    }
}

#[test]
fn broken_seccomp_files_name_the_file_and_the_problem() {
    let cases: &[(&str, &[&str])] = &[
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":["#,
            &["seccomp.json", "EOF"],
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","frobnicate"],"action":"SCMP_ACT_ALLOW"}]}"#,
            &["seccomp.json", "`frobnicate` is unknown"],
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read"],"action":"SCMP_ACT_EXPLODE"}]}"#,
            &["seccomp.json", "SCMP_ACT_EXPLODE"],
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","getcwd"],"action":"SCMP_ACT_ALLOW"},
               {"names":["getcwd"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
            &[
                "seccomp.json",
                "`getcwd`",
                "syscalls[0] (SCMP_ACT_ALLOW)",
                "syscalls[1] (SCMP_ACT_ERRNO)",
            ],
        ),
        (
            r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{"names":["read","read"],"action":"SCMP_ACT_ALLOW"}]}"#,
            &["seccomp.json", "syscalls[0] names `read` twice"],
        ),
    ];
    for (json, needles) in cases {
        let e = variant("log_denials = true", "log_denials = true", Some(json)).unwrap_err();
        assert_eq!(e.key, "seccomp.profile", "{e}");
        let text = e.to_string();
        for needle in *needles {
            assert!(text.contains(needle), "{text:?} lacks {needle:?}");
        }
    }
    // Conditional rules may share a name with an unconditional one.
    let ok = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[
        {"names":["ioctl"],"action":"SCMP_ACT_ALLOW"},
        {"names":["ioctl"],"action":"SCMP_ACT_ERRNO","args":[{"index":1,"value":21522,"op":"SCMP_CMP_EQ"}]}]}"#;
    variant("log_denials = true", "log_denials = true", Some(ok)).unwrap();
}

#[test]
fn registry_patterns() {
    for ok in [
        "docker.io",
        "*.azurecr.io",
        "localhost:5000",
        "ghcr.io/acme",
    ] {
        assert!(validate_registry_pattern(ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "https://docker.io",
        "*",
        "doc*er.io",
        "*.io/x",
        "a b",
        "x.io/",
    ] {
        assert!(validate_registry_pattern(bad).is_err(), "{bad}");
    }
}

fn shipped(name: &str) -> Profile {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../profiles")
        .join(name);
    Profile::load(&path).unwrap()
}

#[test]
fn new_policy_keys_are_validated_by_name() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "allowed_devices = []",
            "allowed_devices = [\"fuse\"]",
            "not a device path under /dev",
        ),
        (
            "allowed_devices = []",
            "allowed_devices = [\"/dev/../etc/shadow\"]",
            "`..`",
        ),
        (
            "allowed_devices = []",
            "allowed_devices = [\"/dev/fuse\", \"/dev/fuse\"]",
            "listed twice",
        ),
        (
            "run_as_root = \"audit\"",
            "run_as_root = \"sometimes\"",
            "unknown variant `sometimes`",
        ),
    ];
    for (from, to, problem) in cases {
        let e = variant(from, to, None).unwrap_err();
        let key = to.split(' ').next().unwrap();
        assert!(e.key.starts_with(&format!("policy.{key}")), "{to}: {e}");
        assert!(e.problem.contains(problem), "{to}: {e}");
    }
    let p = variant(
        "allowed_devices = []",
        "allowed_devices = [\"/dev/fuse\"]",
        None,
    )
    .unwrap();
    assert_eq!(p.policy.allowed_devices, ["/dev/fuse"]);
    // Profiles written before the keys existed: no devices, root audited.
    let p = variant("allowed_devices = []\n", "", None).unwrap();
    assert!(p.policy.allowed_devices.is_empty());
    let p = variant("run_as_root = \"audit\"\n", "", None).unwrap();
    assert_eq!(p.policy.run_as_root, RootPolicy::Audit);
}

#[test]
fn shipped_profiles_choose_the_new_rules() {
    let (default, strict) = (shipped("default.toml"), shipped("strict.toml"));
    assert_eq!(default.policy.run_as_root, RootPolicy::Audit);
    assert_eq!(strict.policy.run_as_root, RootPolicy::Deny);
    assert!(default.policy.allowed_devices.is_empty() && strict.policy.allowed_devices.is_empty());
    assert!(default.seccomp.narrowing.is_empty());
    assert_eq!(strict.seccomp.narrowing.len(), 1);
}

/// The strict profile's narrowing file denies exactly what it says, on the compiled BPF;
/// the default profile allows the same calls.
#[test]
fn strict_narrows_the_default_seccomp_filter() {
    let verdict = |p: &Profile, nr: libc::c_long, args: [u64; 6]| {
        let filter = crate::seccomp::compile(&p.seccomp.profile).unwrap();
        crate::seccomp::describe_action(filter.evaluate(nr, args).unwrap())
    };
    let (default, strict) = (shipped("default.toml"), shipped("strict.toml"));
    const AT_EMPTY_PATH: u64 = 0x1000;
    const MFD_CLOEXEC: u64 = 0x1;
    const MFD_NOEXEC_SEAL: u64 = 0x8;
    const SET_MODE_FILTER: u64 = 1;
    const NEW_LISTENER: u64 = 8;
    const TSYNC: u64 = 1;
    let denied: &[(libc::c_long, [u64; 6], &str)] = &[
        (libc::SYS_name_to_handle_at, [0; 6], "ERRNO(1)"),
        (
            libc::SYS_memfd_create,
            [0, MFD_CLOEXEC, 0, 0, 0, 0],
            "ERRNO(38)",
        ),
        (
            libc::SYS_execveat,
            [3, 0, 0, 0, AT_EMPTY_PATH, 0],
            "ERRNO(1)",
        ),
        (
            libc::SYS_seccomp,
            [SET_MODE_FILTER, NEW_LISTENER | TSYNC, 0, 0, 0, 0],
            "ERRNO(1)",
        ),
        // High bits the kernel ignores do not slip past the rule.
        (
            libc::SYS_seccomp,
            [SET_MODE_FILTER | 1 << 32, NEW_LISTENER, 0, 0, 0, 0],
            "ERRNO(1)",
        ),
    ];
    for (nr, args, want) in denied {
        assert_eq!(verdict(&strict, *nr, *args), *want, "strict: {nr} {args:?}");
        assert_eq!(
            verdict(&default, *nr, *args),
            "ALLOW",
            "default: {nr} {args:?}"
        );
    }
    let allowed: &[(libc::c_long, [u64; 6])] = &[
        (
            libc::SYS_memfd_create,
            [0, MFD_CLOEXEC | MFD_NOEXEC_SEAL, 0, 0, 0, 0],
        ),
        (libc::SYS_execveat, [3, 0, 0, 0, 0, 0]),
        (libc::SYS_execve, [0; 6]),
        (libc::SYS_seccomp, [SET_MODE_FILTER, TSYNC, 0, 0, 0, 0]),
    ];
    for (nr, args) in allowed {
        assert_eq!(
            verdict(&strict, *nr, *args),
            "ALLOW",
            "strict: {nr} {args:?}"
        );
    }
}

#[test]
fn narrowing_files_may_only_deny() {
    let allow_rule = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mount"],"action":"SCMP_ACT_ALLOW"}]}"#;
    let not_allow_default = r#"{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[]}"#;
    let with_arch =
        r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":["SCMP_ARCH_X86_64"],"syscalls":[]}"#;
    for (json, problem) in [
        (
            allow_rule,
            "syscalls[0] (mount) is SCMP_ACT_ALLOW: a narrowing file may only deny",
        ),
        (not_allow_default, "must have defaultAction SCMP_ACT_ALLOW"),
        (with_arch, "remove `architectures`"),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let narrow = dir.path().join("narrow.json");
        std::fs::write(&narrow, json).unwrap();
        let e = variant(
            "log_denials = true",
            &format!("narrow = [{narrow:?}]\nlog_denials = true"),
            None,
        )
        .unwrap_err();
        assert_eq!(e.key, "seccomp.narrow[0]", "{e}");
        assert!(e.problem.contains(problem), "{e}");
        assert!(e.problem.contains("narrow.json"), "{e}");
    }
}
