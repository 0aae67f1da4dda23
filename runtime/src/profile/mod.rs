//! Hardening profiles: what an operator chooses for a runtime class, loaded from TOML.
//!
//! Loading validates everything (including the seccomp file, which must compile for the
//! running architecture); every error names the file, the key and what is wrong.

use crate::kubelet::{KubeletSettings, RawKubelet};
use crate::oci_spec::runtime::{Capabilities, Capability, LinuxSeccomp};
use crate::storage_settings::{RawStorage, StorageSettings};
use crate::volume_settings::{RawVolumes, SecretInEnv, VolumeSettings};
use serde::Deserialize;
use std::fmt;
use std::path::{Path, PathBuf};

mod seccomp;

/// A profile that could not be loaded: which file, which key, what is wrong.
#[derive(Debug, thiserror::Error)]
pub struct ProfileError {
    pub file: PathBuf,
    /// Dotted key path (`cgroups.ceilings.memory`); empty when the file as a whole is wrong.
    pub key: String,
    pub problem: String,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "profile {}: {}", self.file.display(), self.problem)
        } else {
            write!(
                f,
                "profile {}: key `{}`: {}",
                self.file.display(),
                self.key,
                self.problem
            )
        }
    }
}

/// Allow or deny, for each policy rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Allow,
    Deny,
}

/// What the `run-as-root` rule does with an app container whose process runs as UID 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RootPolicy {
    /// Let it run, silently.
    Allow,
    /// Let it run and record it (a `findings` entry in the audit line, a log line).
    Audit,
    /// Refuse it.
    Deny,
}

/// What happens to a cgroup request above the profile's ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExcess {
    Clamp,
    Refuse,
}

#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    /// The TOML file it was loaded from.
    pub source: PathBuf,
    pub capabilities: CapabilitySettings,
    pub paths: PathSettings,
    pub seccomp: SeccompSettings,
    pub userns: IdPoolSettings,
    pub cgroups: CgroupSettings,
    pub policy: PolicySettings,
    pub audit: AuditSettings,
    /// Facts about the node's kubelet (`[kubelet]`).
    pub kubelet: KubeletSettings,
    /// Bind mounts: idmapping, hostPaths (`[volumes]`).
    pub volumes: VolumeSettings,
    /// Ephemeral-storage limits of the writable layer (`[storage]`); None: unbounded, silently.
    pub storage: Option<StorageSettings>,
}

#[derive(Debug, Clone)]
pub struct CapabilitySettings {
    /// The only capabilities a container may hold (bounding, effective, permitted).
    pub allow: Capabilities,
    /// Capabilities containerd grants every container by default: dropped without refusal
    /// even when `policy.extra_capabilities` is deny.
    pub runtime_defaults: Capabilities,
    /// Always true: a profile that sets it false is rejected at load time.
    pub no_new_privs: bool,
}

#[derive(Debug, Clone)]
pub struct PathSettings {
    pub masked: Vec<String>,
    pub readonly: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct SeccompSettings {
    /// Resolved path of the default seccomp profile.
    pub file: PathBuf,
    /// Resolved paths of the narrowing files (`seccomp.narrow`) merged into `profile`.
    pub narrowing: Vec<PathBuf>,
    /// The default profile with the narrowing files' deny rules appended (validated: it
    /// compiles for the running architecture).
    pub profile: LinuxSeccomp,
    /// Install with SECCOMP_FILTER_FLAG_LOG so the kernel audits denials.
    pub log_denials: bool,
    /// Record mode (`stockade-record`): the default filter's allowed syscalls are logged
    /// (SECCOMP_RET_LOG) instead of silently allowed; see `hardener::record`.
    pub record: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdPoolSettings {
    pub first_id: u32,
    pub size: u32,
    pub ids_per_pod: u32,
}

/// CPU in millicores (1000 = one core), memory in bytes, pids as a count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub cpu_millicores: u64,
    pub memory_bytes: i64,
    pub pids: i64,
}

#[derive(Debug, Clone)]
pub struct CgroupSettings {
    /// Absolute cgroup parent for containers whose spec has no usable cgroupsPath, under
    /// the cgroupfs driver (`<parent>/<sandbox>/<id>`). For a slice parent, the slice's
    /// directory (`a-b.slice` -> `/a.slice/a-b.slice`).
    pub parent: String,
    /// The parent as a systemd slice (`stockade.slice`), when the profile names one: under
    /// the systemd driver such containers get the scope `<slice>:stockade:<id>`.
    pub parent_slice: Option<String>,
    /// CFS period used when the spec sets none.
    pub cpu_period_us: u64,
    pub defaults: Limits,
    pub ceilings: Limits,
    pub on_excess: OnExcess,
}

#[derive(Debug, Clone)]
pub struct PolicySettings {
    pub privileged: Verdict,
    pub host_network: Verdict,
    pub host_pid: Verdict,
    pub host_ipc: Verdict,
    pub extra_capabilities: Verdict,
    /// Registries (`host`, `host/path` prefix, or `*.domain`) images may come from; empty
    /// means any.
    pub allowed_registries: Vec<String>,
    /// Sysctls a container may set (names, or prefixes ending in `*`); default:
    /// Kubernetes' safe set.
    pub allowed_sysctls: Vec<String>,
    /// Device paths (as the container sees them, under /dev) a container may be given
    /// beyond the OCI defaults (`host-devices` rule); empty means none.
    pub allowed_devices: Vec<String>,
    /// App containers whose process runs as UID 0 (`run-as-root` rule).
    pub run_as_root: RootPolicy,
    /// Environment variables that look like secrets (rule `secret-in-env`).
    pub secret_in_env: SecretInEnv,
}

#[derive(Debug, Clone, Default)]
pub struct AuditSettings {
    /// JSON-lines audit log of every hardening decision; None disables it.
    pub log: Option<PathBuf>,
}

/// The smallest memory limit the kernel and a container's init can live with.
const MIN_MEMORY_BYTES: i64 = 4 << 20;
/// CFS accepts periods from 1 ms to 1 s.
const CPU_PERIOD_RANGE_US: std::ops::RangeInclusive<u64> = 1_000..=1_000_000;
/// Host IDs below this belong to real users and system accounts.
const MIN_FIRST_HOST_ID: u32 = 65_536;

// The file as written: every table refuses unknown keys, so a typo is an error, not a
// silently ignored setting.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: String,
    capabilities: RawCapabilities,
    paths: RawPaths,
    seccomp: RawSeccomp,
    userns: RawUserns,
    cgroups: RawCgroups,
    policy: RawPolicy,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    kubelet: RawKubelet,
    #[serde(default)]
    volumes: RawVolumes,
    storage: Option<RawStorage>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCapabilities {
    allow: Vec<String>,
    #[serde(default)]
    runtime_defaults: Vec<String>,
    no_new_privs: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPaths {
    masked: Vec<String>,
    readonly: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeccomp {
    profile: PathBuf,
    /// Files whose deny rules narrow `profile` for this profile only.
    #[serde(default)]
    narrow: Vec<PathBuf>,
    #[serde(default = "default_true")]
    log_denials: bool,
    #[serde(default)]
    record: bool,
}

fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUserns {
    first_id: u32,
    size: u32,
    ids_per_pod: u32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCgroups {
    #[serde(default = "default_cgroup_parent")]
    parent: String,
    #[serde(default = "default_cpu_period")]
    cpu_period_us: u64,
    on_excess: OnExcess,
    defaults: RawLimits,
    ceilings: RawLimits,
}

fn default_cgroup_parent() -> String {
    "/stockade".to_string()
}

fn default_cpu_period() -> u64 {
    100_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    /// Cores, e.g. 0.5 or 2.
    cpu: f64,
    memory: ByteSize,
    pids: i64,
}

/// Bytes as an integer or with a unit: "512Mi", "2Gi", "64MiB", "1G".
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum ByteSize {
    Bytes(i64),
    Text(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    privileged: Verdict,
    host_network: Verdict,
    host_pid: Verdict,
    host_ipc: Verdict,
    extra_capabilities: Verdict,
    allowed_registries: Vec<String>,
    #[serde(default = "kubernetes_safe_sysctls")]
    allowed_sysctls: Vec<String>,
    #[serde(default)]
    allowed_devices: Vec<String>,
    #[serde(default = "default_run_as_root")]
    run_as_root: RootPolicy,
    #[serde(default)]
    secret_in_env: SecretInEnv,
}

/// A sysctl name (`net.ipv4.tcp_syncookies`) or a prefix ending in `*` (`net.ipv4.tcp_*`).
fn validate_sysctl_pattern(name: &str) -> Result<(), String> {
    let body = name.strip_suffix('*').unwrap_or(name);
    let valid = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c);
    if body.is_empty() || !body.chars().all(valid) {
        return Err(format!(
            "{name:?} is not a sysctl name (lowercase letters, digits, `.`, `_`, `-`, `/`; \
             `*` only at the end)"
        ));
    }
    Ok(())
}

fn kubernetes_safe_sysctls() -> Vec<String> {
    crate::hardener::KUBERNETES_SAFE_SYSCTLS
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// Profiles written before the rule existed record root containers without refusing them.
fn default_run_as_root() -> RootPolicy {
    RootPolicy::Audit
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAudit {
    log: Option<PathBuf>,
}

impl Profile {
    /// Load and validate a profile; every error names the file, the key and the problem.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError {
            file: path.to_path_buf(),
            key: String::new(),
            problem: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, path)
    }

    /// Parse a profile's text; `source` names it in errors and anchors the relative
    /// seccomp path (relative paths are resolved against its directory).
    pub fn parse(text: &str, source: &Path) -> Result<Profile, ProfileError> {
        let err = |key: &str, problem: String| ProfileError {
            file: source.to_path_buf(),
            key: key.to_string(),
            problem,
        };
        let deserializer = toml::Deserializer::new(text);
        let raw: RawProfile = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            let inner = e.into_inner();
            // toml's messages may span lines ("invalid string\nexpected `\"`"): one line.
            let message = inner
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join(": ");
            let problem = match inner.span() {
                Some(span) => {
                    let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                    format!("{message} (line {line})")
                }
                None => message,
            };
            err(&key, problem)
        })?;

        if raw.name.trim().is_empty() {
            return Err(err("name", "must not be empty".into()));
        }

        let capabilities = CapabilitySettings {
            allow: parse_capabilities(&raw.capabilities.allow, "capabilities.allow", &err)?,
            runtime_defaults: parse_capabilities(
                &raw.capabilities.runtime_defaults,
                "capabilities.runtime_defaults",
                &err,
            )?,
            no_new_privs: raw.capabilities.no_new_privs,
        };
        if !capabilities.no_new_privs {
            return Err(err(
                "capabilities.no_new_privs",
                "must be true: Stockade always sets no_new_privs (seccomp filters require it)"
                    .into(),
            ));
        }

        let paths = PathSettings {
            masked: validate_paths(raw.paths.masked, "paths.masked", &err)?,
            readonly: validate_paths(raw.paths.readonly, "paths.readonly", &err)?,
        };

        let userns = validate_userns(raw.userns, &err)?;
        let cgroups = validate_cgroups(raw.cgroups, &err)?;

        for (i, registry) in raw.policy.allowed_registries.iter().enumerate() {
            validate_registry_pattern(registry)
                .map_err(|problem| err(&format!("policy.allowed_registries[{i}]"), problem))?;
        }
        for (i, name) in raw.policy.allowed_sysctls.iter().enumerate() {
            validate_sysctl_pattern(name)
                .map_err(|problem| err(&format!("policy.allowed_sysctls[{i}]"), problem))?;
        }
        for (i, device) in raw.policy.allowed_devices.iter().enumerate() {
            validate_device_path(device, &raw.policy.allowed_devices[..i])
                .map_err(|problem| err(&format!("policy.allowed_devices[{i}]"), problem))?;
        }
        let policy = PolicySettings {
            privileged: raw.policy.privileged,
            host_network: raw.policy.host_network,
            host_pid: raw.policy.host_pid,
            host_ipc: raw.policy.host_ipc,
            extra_capabilities: raw.policy.extra_capabilities,
            allowed_registries: raw.policy.allowed_registries,
            allowed_sysctls: raw.policy.allowed_sysctls,
            allowed_devices: raw.policy.allowed_devices,
            run_as_root: raw.policy.run_as_root,
            secret_in_env: raw.policy.secret_in_env,
        };
        let kubelet = raw.kubelet.validate().map_err(|(key, p)| err(key, p))?;
        let volumes = raw.volumes.validate().map_err(|(key, p)| err(&key, p))?;
        let storage = raw
            .storage
            .map(RawStorage::validate)
            .transpose()
            .map_err(|(key, p)| err(&key, p))?;

        if let Some(log) = &raw.audit.log {
            if !log.is_absolute() {
                return Err(err("audit.log", "must be an absolute path".into()));
            }
        }
        // Last: the most expensive check (reads and compiles the seccomp file).
        let seccomp = seccomp::load(raw.seccomp, source, &err)?;

        Ok(Profile {
            name: raw.name,
            source: source.to_path_buf(),
            capabilities,
            paths,
            seccomp,
            userns,
            cgroups,
            policy,
            audit: AuditSettings { log: raw.audit.log },
            kubelet,
            volumes,
            storage,
        })
    }
}

fn parse_capabilities(
    names: &[String],
    key: &str,
    err: &impl Fn(&str, String) -> ProfileError,
) -> Result<Capabilities, ProfileError> {
    let mut set = Capabilities::new();
    for (i, name) in names.iter().enumerate() {
        let cap = parse_capability(name).ok_or_else(|| {
            err(
                &format!("{key}[{i}]"),
                format!("unknown capability {name:?}"),
            )
        })?;
        if !set.insert(cap) {
            return Err(err(
                &format!("{key}[{i}]"),
                format!("{name:?} is listed twice"),
            ));
        }
    }
    Ok(set)
}

/// `CHOWN` or `CAP_CHOWN`, any case.
pub fn parse_capability(name: &str) -> Option<Capability> {
    Capability::deserialize(serde_json::Value::String(name.to_string())).ok()
}

fn validate_paths(
    paths: Vec<String>,
    key: &str,
    err: &impl Fn(&str, String) -> ProfileError,
) -> Result<Vec<String>, ProfileError> {
    for (i, p) in paths.iter().enumerate() {
        let key = format!("{key}[{i}]");
        if !p.starts_with('/') {
            return Err(err(&key, format!("{p:?} is not an absolute path")));
        }
        if Path::new(p).components().any(|c| c.as_os_str() == "..") {
            return Err(err(&key, format!("{p:?} must not contain `..`")));
        }
        if paths[..i].contains(p) {
            return Err(err(&key, format!("{p:?} is listed twice")));
        }
    }
    Ok(paths)
}

fn validate_userns(
    raw: RawUserns,
    err: &impl Fn(&str, String) -> ProfileError,
) -> Result<IdPoolSettings, ProfileError> {
    if raw.first_id < MIN_FIRST_HOST_ID {
        return Err(err(
            "userns.first_id",
            format!(
                "{} is below {MIN_FIRST_HOST_ID}: container root must map to an ID no host user has",
                raw.first_id
            ),
        ));
    }
    if raw.ids_per_pod < 65_536 {
        return Err(err(
            "userns.ids_per_pod",
            format!(
                "{} is too small: a pod needs 65536 IDs so every image UID/GID maps",
                raw.ids_per_pod
            ),
        ));
    }
    if raw.size != 0 && raw.ids_per_pod > raw.size {
        return Err(err(
            "userns.ids_per_pod",
            format!(
                "{} is larger than the whole pool (userns.size {})",
                raw.ids_per_pod, raw.size
            ),
        ));
    }
    if raw.size == 0 || raw.size % raw.ids_per_pod != 0 {
        return Err(err(
            "userns.size",
            format!(
                "{} must be a non-zero multiple of ids_per_pod ({})",
                raw.size, raw.ids_per_pod
            ),
        ));
    }
    // u32::MAX itself is the kernel's "no ID" (-1), so the pool must end below it.
    if u64::from(raw.first_id) + u64::from(raw.size) > u64::from(u32::MAX) {
        return Err(err(
            "userns.size",
            format!(
                "first_id {} + size {} passes the largest host ID",
                raw.first_id, raw.size
            ),
        ));
    }
    Ok(IdPoolSettings {
        first_id: raw.first_id,
        size: raw.size,
        ids_per_pod: raw.ids_per_pod,
    })
}

fn validate_cgroups(
    raw: RawCgroups,
    err: &impl Fn(&str, String) -> ProfileError,
) -> Result<CgroupSettings, ProfileError> {
    let (parent, parent_slice) = cgroup_parent(&raw.parent).map_err(|problem| {
        err(
            "cgroups.parent",
            format!(
                "{:?} must be an absolute cgroup path or a systemd slice (`name.slice`): {problem}",
                raw.parent
            ),
        )
    })?;
    if !CPU_PERIOD_RANGE_US.contains(&raw.cpu_period_us) {
        return Err(err(
            "cgroups.cpu_period_us",
            format!(
                "{} is outside the kernel's range {}..={}",
                raw.cpu_period_us,
                CPU_PERIOD_RANGE_US.start(),
                CPU_PERIOD_RANGE_US.end()
            ),
        ));
    }
    let defaults = validate_limits(raw.defaults, "cgroups.defaults", err)?;
    let ceilings = validate_limits(raw.ceilings, "cgroups.ceilings", err)?;
    let over = [
        (defaults.cpu_millicores > ceilings.cpu_millicores, "cpu"),
        (defaults.memory_bytes > ceilings.memory_bytes, "memory"),
        (defaults.pids > ceilings.pids, "pids"),
    ];
    if let Some((_, which)) = over.iter().find(|(is_over, _)| *is_over) {
        return Err(err(
            &format!("cgroups.defaults.{which}"),
            format!("is above cgroups.ceilings.{which}"),
        ));
    }
    Ok(CgroupSettings {
        parent,
        parent_slice,
        cpu_period_us: raw.cpu_period_us,
        defaults,
        ceilings,
        on_excess: raw.on_excess,
    })
}

/// `cgroups.parent`: an absolute path, or a slice with its directory.
fn cgroup_parent(raw: &str) -> Result<(String, Option<String>), String> {
    if raw.starts_with('/') {
        if raw.contains("..") || raw.contains(':') {
            return Err("a path may not hold `..` or `:`".into());
        }
        return Ok((raw.trim_end_matches('/').to_string(), None));
    }
    let dir = stockade_cgroups::path::expand_slice(raw).map_err(|e| e.to_string())?;
    let dir = format!("/{}", dir.display());
    Ok((dir.trim_end_matches('/').to_string(), Some(raw.to_string())))
}

fn validate_limits(
    raw: RawLimits,
    key: &str,
    err: &impl Fn(&str, String) -> ProfileError,
) -> Result<Limits, ProfileError> {
    // 0.01 core is the smallest quota CFS takes at the default period (1 ms).
    if !raw.cpu.is_finite() || raw.cpu < 0.01 || raw.cpu > 4096.0 {
        return Err(err(
            &format!("{key}.cpu"),
            format!("{} cores is not between 0.01 and 4096", raw.cpu),
        ));
    }
    let memory_bytes =
        parse_byte_size(&raw.memory).map_err(|p| err(&format!("{key}.memory"), p))?;
    if memory_bytes < MIN_MEMORY_BYTES {
        return Err(err(
            &format!("{key}.memory"),
            format!("{memory_bytes} bytes is below the minimum of 4Mi"),
        ));
    }
    if raw.pids < 1 {
        return Err(err(
            &format!("{key}.pids"),
            format!("{} must be at least 1", raw.pids),
        ));
    }
    Ok(Limits {
        cpu_millicores: (raw.cpu * 1000.0).round() as u64,
        memory_bytes,
        pids: raw.pids,
    })
}

pub(crate) fn parse_byte_size(size: &ByteSize) -> Result<i64, String> {
    let text = match size {
        ByteSize::Bytes(n) => return Ok(*n),
        ByteSize::Text(t) => t.trim(),
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: i64 = digits
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 512Mi, 2Gi, 1048576)"))?;
    let multiplier: i64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KB" => 1_000,
        "Ki" | "KiB" => 1 << 10,
        "M" | "MB" => 1_000_000,
        "Mi" | "MiB" => 1 << 20,
        "G" | "GB" => 1_000_000_000,
        "Gi" | "GiB" => 1 << 30,
        "T" | "TB" => 1_000_000_000_000,
        "Ti" | "TiB" => 1 << 40,
        other => return Err(format!("unknown unit {other:?} in {text:?}")),
    };
    n.checked_mul(multiplier)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// An allowed device: an absolute path under /dev, without `..`, listed once.
fn validate_device_path(device: &str, earlier: &[String]) -> Result<(), String> {
    let path = Path::new(device);
    if !path.starts_with("/dev") || path == Path::new("/dev") {
        return Err(format!(
            "{device:?} is not a device path under /dev (e.g. \"/dev/fuse\")"
        ));
    }
    if path.components().any(|c| c.as_os_str() == "..") {
        return Err(format!("{device:?} must not contain `..`"));
    }
    if earlier.iter().any(|d| d == device) {
        return Err(format!("{device:?} is listed twice"));
    }
    Ok(())
}

fn validate_registry_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("must not be empty".into());
    }
    if pattern.contains("://") {
        return Err(format!(
            "{pattern:?}: give the registry host without a scheme"
        ));
    }
    if pattern.chars().any(|c| c.is_whitespace()) {
        return Err(format!("{pattern:?} contains white space"));
    }
    if let Some(rest) = pattern.strip_prefix("*.") {
        if rest.is_empty() || rest.contains('*') || rest.contains('/') {
            return Err(format!(
                "{pattern:?}: a wildcard pattern is `*.domain` with nothing after the domain"
            ));
        }
    } else if pattern.contains('*') {
        return Err(format!(
            "{pattern:?}: `*` is only allowed as a leading `*.`"
        ));
    }
    if pattern.ends_with('/') {
        return Err(format!("{pattern:?} must not end with `/`"));
    }
    Ok(())
}

#[cfg(test)]
mod tests;
