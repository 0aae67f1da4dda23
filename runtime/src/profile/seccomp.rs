//! The profile's `[seccomp]` table: the node's default filter and the narrowing files a
//! profile adds on top of it (strict's `seccomp/strict.json`).

use super::{ProfileError, RawSeccomp, SeccompSettings};
use crate::oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction};
use std::path::{Path, PathBuf};

/// Relative paths are resolved against the profile's directory.
fn resolve(path: PathBuf, source: &Path) -> PathBuf {
    if path.is_absolute() {
        path
    } else {
        source.parent().unwrap_or_else(|| Path::new(".")).join(path)
    }
}

pub(super) fn load(
    raw: RawSeccomp,
    source: &Path,
    err: &impl Fn(&str, String) -> ProfileError,
) -> Result<SeccompSettings, ProfileError> {
    let file = resolve(raw.profile, source);
    let mut profile =
        crate::seccomp::load_file(&file).map_err(|e| err("seccomp.profile", e.to_string()))?;
    check_duplicates(&profile)
        .map_err(|problem| err("seccomp.profile", format!("{}: {problem}", file.display())))?;

    let mut narrowing = Vec::new();
    for (i, path) in raw.narrow.into_iter().enumerate() {
        let key = format!("seccomp.narrow[{i}]");
        let path = resolve(path, source);
        if narrowing.contains(&path) || path == file {
            return Err(err(&key, format!("{} is listed twice", path.display())));
        }
        let narrow = crate::seccomp::load_file(&path).map_err(|e| err(&key, e.to_string()))?;
        check_narrows(&narrow)
            .and_then(|()| check_duplicates(&narrow))
            .map_err(|problem| err(&key, format!("{}: {problem}", path.display())))?;
        // A syscall gets the most restrictive verdict of all rules that match it (see
        // profiles/seccomp/README.md), so appended deny rules can only narrow.
        let mut rules = profile.syscalls().clone().unwrap_or_default();
        rules.extend(narrow.syscalls().clone().unwrap_or_default());
        profile.set_syscalls(Some(rules));
        narrowing.push(path);
    }

    crate::seccomp::compile(&profile).map_err(|e| {
        let files: Vec<String> = std::iter::once(&file)
            .chain(&narrowing)
            .map(|f| f.display().to_string())
            .collect();
        err(
            "seccomp.profile",
            format!("{} does not compile: {e}", files.join(" + ")),
        )
    })?;
    Ok(SeccompSettings {
        file,
        narrowing,
        profile,
        log_denials: raw.log_denials,
        record: raw.record,
    })
}

/// A narrowing file changes nothing it does not name (`defaultAction` SCMP_ACT_ALLOW),
/// and each of its rules denies: an allow (or log) rule there would read as a widening
/// that never takes effect.
fn check_narrows(narrow: &LinuxSeccomp) -> Result<(), String> {
    if narrow.default_action() != LinuxSeccompAction::ScmpActAllow {
        return Err(format!(
            "a narrowing file must have defaultAction SCMP_ACT_ALLOW (it changes only what \
             it names), not {}",
            narrow.default_action()
        ));
    }
    if narrow
        .architectures()
        .as_ref()
        .is_some_and(|a| !a.is_empty())
    {
        return Err(
            "a narrowing file takes the architectures of seccomp.profile: \
                    remove `architectures`"
                .into(),
        );
    }
    if narrow.flags().as_ref().is_some_and(|f| !f.is_empty()) {
        return Err("a narrowing file takes the flags of seccomp.profile: remove `flags`".into());
    }
    for (i, rule) in narrow.syscalls().iter().flatten().enumerate() {
        if matches!(
            rule.action(),
            LinuxSeccompAction::ScmpActAllow | LinuxSeccompAction::ScmpActLog
        ) {
            return Err(format!(
                "syscalls[{i}] ({}) is {}: a narrowing file may only deny",
                rule.names().join(", "),
                rule.action()
            ));
        }
    }
    Ok(())
}

/// The node's default filter is the operator's statement of what containers may call: a
/// syscall named in two rules without argument conditions is a mistake (a copy-paste, or
/// two intentions of which only the most restrictive would take effect), as a capability
/// or path listed twice is. Rules with conditions may share names (moby's `personality`,
/// an unconditional `ioctl` narrowed by a conditional ERRNO). Checked per file: a
/// narrowing file exists to deny what the default file allows.
fn check_duplicates(profile: &LinuxSeccomp) -> Result<(), String> {
    let mut first = std::collections::HashMap::new();
    for (i, rule) in profile.syscalls().iter().flatten().enumerate() {
        if rule.args().as_ref().is_some_and(|a| !a.is_empty()) {
            continue;
        }
        for name in rule.names() {
            let Some((j, action)) = first.insert(name.as_str(), (i, rule.action())) else {
                continue;
            };
            return Err(if j == i {
                format!("syscalls[{i}] names `{name}` twice")
            } else {
                format!(
                    "`{name}` has unconditional rules in syscalls[{j}] ({action}) and \
                     syscalls[{i}] ({}): keep one",
                    rule.action()
                )
            });
        }
    }
    Ok(())
}
