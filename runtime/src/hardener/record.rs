//! Record mode: which default filter a container gets when its profile records
//! (`[seccomp] record = true`, the `stockade-record` RuntimeClass).
//!
//! The recording filter is the profile's default filter with every ALLOW turned into LOG
//! (SECCOMP_RET_LOG): each syscall the default lets through still runs, and the kernel
//! writes an audit record (type 1326, `code=0x7ffc0000`) naming it, which `stockade
//! profile record` collects. Every rule that denies (ERRNO, KILL, TRAP, ...) and the
//! default action stay exactly as they are, so a recorded container is denied all that a
//! default one is, including argument conditions: a LOG rule with a condition matches
//! exactly where the ALLOW rule did.
//!
//! Why LOG rather than user notifications with CONTINUE: LOG needs no agent in the
//! syscall path (a stuck agent would stall the workload), and the kernel's audit records
//! already feed the exporter's denial counters; the cost is one audit record per syscall
//! (see the bench's `record` rows), which is why record mode is a profile of its own and
//! not a pod annotation a pod could set for itself.

use super::Report;
use crate::oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction};
use crate::profile::Profile;

/// The default filter for a container of `profile`: the profile's own, or in record mode
/// its recording version (see [`recording_filter`]).
pub(super) fn default_filter(profile: &Profile, report: &mut Report) -> LinuxSeccomp {
    if !profile.seccomp.record {
        return profile.seccomp.profile.clone();
    }
    report.change(
        "seccomp",
        "record mode: the default filter's allowed syscalls are logged (SECCOMP_RET_LOG), \
         its denials unchanged",
    );
    recording_filter(&profile.seccomp.profile)
}

/// `filter` with every ALLOW (rules and default action) replaced by LOG.
pub fn recording_filter(filter: &LinuxSeccomp) -> LinuxSeccomp {
    let mut out = filter.clone();
    if out.default_action() == LinuxSeccompAction::ScmpActAllow {
        out.set_default_action(LinuxSeccompAction::ScmpActLog);
    }
    let rules = out.syscalls().clone().map(|rules| {
        rules
            .into_iter()
            .map(|mut rule| {
                if rule.action() == LinuxSeccompAction::ScmpActAllow {
                    rule.set_action(LinuxSeccompAction::ScmpActLog);
                }
                rule
            })
            .collect()
    });
    out.set_syscalls(rules);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp;

    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const LOG: u32 = libc::SECCOMP_RET_LOG;

    fn shipped_default() -> LinuxSeccomp {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../profiles/seccomp/default.json"
        );
        seccomp::load_file(std::path::Path::new(path)).unwrap()
    }

    fn nr(name: &str) -> i64 {
        let sysno: syscalls::Sysno = name.parse().unwrap();
        sysno.id() as i64
    }

    /// Every verdict of the default filter is kept, except that ALLOW becomes LOG.
    #[test]
    fn recording_keeps_every_denial_and_logs_every_allow() {
        let default = shipped_default();
        let plain = seccomp::compile(&default).unwrap();
        let recording = seccomp::compile(&recording_filter(&default)).unwrap();
        let mut logged = 0;
        for sysno in syscalls::Sysno::iter() {
            let nr = sysno.id() as i64;
            // Some argument patterns the default's conditional rules distinguish.
            for args in [
                [0; 6],
                [0x1000_0000, 0, 0, 0, 0, 0], // clone(CLONE_NEWUSER)
                [10, 0x5412, 0, 0, 0, 0],     // socket(AF_INET6) / ioctl(TIOCSTI)
                [40, 0, 0, 0, 0, 0],          // socket(AF_VSOCK)
                [8, 0, 0, 0, 0, 0],
            ] {
                let before = plain.evaluate(nr, args).unwrap();
                let after = recording.evaluate(nr, args).unwrap();
                if before == ALLOW {
                    assert_eq!(after, LOG, "{sysno} {args:?}");
                    logged += 1;
                } else {
                    assert_eq!(after, before, "{sysno} {args:?}");
                }
            }
        }
        assert!(logged > 300, "only {logged} allowed calls");
        // The conditions themselves survive: clone with CLONE_NEWUSER is still refused.
        let newuser = [libc::CLONE_NEWUSER as u64, 0, 0, 0, 0, 0];
        assert_eq!(
            recording.evaluate(nr("clone"), newuser).unwrap(),
            libc::SECCOMP_RET_ERRNO | libc::EPERM as u32
        );
        assert_eq!(recording.evaluate(nr("getppid"), [0; 6]).unwrap(), LOG);
    }

    fn shipped_profile(name: &str) -> Profile {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
        Profile::load(&dir.join(name)).unwrap()
    }

    /// profiles/record.toml is default.toml in record mode: nothing else may drift.
    #[test]
    fn the_record_profile_is_the_default_one_recording() {
        let default = shipped_profile("default.toml");
        let record = shipped_profile("record.toml");
        assert!(record.seccomp.record && !default.seccomp.record);
        assert_eq!(record.name, "record");
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../profiles");
        let keys = |name: &str| -> Vec<String> {
            std::fs::read_to_string(dir.join(name))
                .unwrap()
                .lines()
                .map(|l| l.split('#').next().unwrap_or("").trim_end().to_string())
                .filter(|l| !l.is_empty() && !l.starts_with("name =") && l != "record = true")
                .collect()
        };
        assert_eq!(keys("record.toml"), keys("default.toml"));
    }

    /// The hardener hands the shim the recording filter, and says so in the report.
    #[test]
    fn harden_plans_the_recording_filter_in_record_mode() {
        let spec_path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/ctr-default.json"
        );
        let spec = crate::oci_spec::runtime::Spec::load(spec_path).unwrap();
        let ctx = super::super::HardenContext {
            container_id: "c1".into(),
            sandbox_id: "c1".into(),
            is_sandbox: true,
            id_range: crate::idrange::IdRange {
                first: 1 << 30,
                size: 65_536,
            },
            pod_userns: None,
            pod_pids: Vec::new(),
            netns_path_is_host: false,
            cgroup_driver: super::super::CgroupDriver::Cgroupfs,
            cgroup_v1: Vec::new(),
            resolved_sources: Default::default(),
            writable_layer: Default::default(),
        };
        for (name, want_log) in [("record.toml", true), ("default.toml", false)] {
            let profile = shipped_profile(name);
            let hardened = super::super::harden(spec.clone(), &profile, &ctx).unwrap();
            let compiled = seccomp::compile(&hardened.seccomp.default).unwrap();
            let getppid = compiled.evaluate(nr("getppid"), [0; 6]).unwrap();
            assert_eq!(getppid, if want_log { LOG } else { ALLOW }, "{name}");
            let said = hardened
                .report
                .changes
                .iter()
                .any(|c| c.what.starts_with("record mode"));
            assert_eq!(said, want_log, "{name}");
        }
    }

    #[test]
    fn an_allow_default_action_becomes_log_and_denials_stay() {
        let narrow: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[
                {"names":["getcwd"],"action":"SCMP_ACT_ERRNO","errnoRet":13}]}"#,
        )
        .unwrap();
        let recording = recording_filter(&narrow);
        assert_eq!(recording.default_action(), LinuxSeccompAction::ScmpActLog);
        let compiled = seccomp::compile(&recording).unwrap();
        assert_eq!(compiled.evaluate(nr("getppid"), [0; 6]).unwrap(), LOG);
        assert_eq!(
            compiled.evaluate(nr("getcwd"), [0; 6]).unwrap(),
            libc::SECCOMP_RET_ERRNO | 13
        );
    }
}
