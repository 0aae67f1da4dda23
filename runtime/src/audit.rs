//! The audit trail: every hardening decision as one JSON line in the log the profile names
//! (`[audit] log`).
//!
//! CONTRACT (the shim calls this; `stockade monitor` reads the lines back):
//! - [`AuditLog::open`]`(path) -> Result<AuditLog, AuditError>` once per shim, or
//!   [`AuditLog::from_profile`]`(&profile)` which gives `None` when the profile disables it;
//! - build an [`AuditEvent`] with [`AuditEvent::hardened`], [`AuditEvent::refused`],
//!   [`AuditEvent::error`] or [`AuditEvent::from_outcome`] (then [`AuditEvent::for_update`]
//!   for an `Update` request), add the image with [`AuditEvent::with_image`];
//! - [`AuditLog::record`]`(&event) -> Result<(), AuditError>`.
//!
//! Every line is written with one write(2) on a file opened with O_APPEND, so the lines of
//! concurrent shims (one per pod) never interleave. The file is reopened for every line, so
//! a log rotated away (rename + create) is followed without a signal.

use crate::hardener::{Change, Finding, HardenError, Refusal, Report};
use crate::pod::PodIdentity;
use crate::profile::Profile;
use serde::{Deserialize, Serialize};
use std::fs::{DirBuilder, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: must be an absolute path")]
    NotAbsolute { path: PathBuf },
    #[error("audit log {path}: cannot create its directory: {source}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit log {path}: cannot open for appending: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit log {path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("audit log {path}: short write ({written} of {len} bytes): the line is truncated")]
    ShortWrite {
        path: PathBuf,
        written: usize,
        len: usize,
    },
    #[error("audit event cannot be serialized: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// What was decided. Serialized as `hardened`, `refused`, `error`, `update-hardened`,
/// `update-refused`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditKind {
    /// A container was hardened and will be created.
    Hardened,
    /// The policy refused a container (`rule` names the rule).
    Refused,
    /// The hardener or the runtime failed on a request (invalid spec, ...).
    Error,
    /// An `Update` of a container's resources was clamped/accepted.
    UpdateHardened,
    /// An `Update` was refused (`rule` names the ceiling).
    UpdateRefused,
}

impl AuditKind {
    pub const ALL: [AuditKind; 5] = [
        AuditKind::Hardened,
        AuditKind::Refused,
        AuditKind::Error,
        AuditKind::UpdateHardened,
        AuditKind::UpdateRefused,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AuditKind::Hardened => "hardened",
            AuditKind::Refused => "refused",
            AuditKind::Error => "error",
            AuditKind::UpdateHardened => "update-hardened",
            AuditKind::UpdateRefused => "update-refused",
        }
    }

    /// Whether this is a policy refusal (of a create or of an update).
    pub fn is_refusal(self) -> bool {
        matches!(self, AuditKind::Refused | AuditKind::UpdateRefused)
    }
}

/// One line of the audit trail.
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    /// RFC 3339, UTC, millisecond precision.
    pub timestamp: String,
    pub event: AuditKind,
    pub container_id: String,
    pub sandbox_id: String,
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub container: Option<String>,
    /// `io.kubernetes.cri.image-name`, when known.
    pub image: Option<String>,
    pub profile: String,
    /// For refusals: the rule's `Rule::name()`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub changes: Vec<Change>,
    pub notes: Vec<String>,
    /// Rules the profile audits instead of enforcing that matched (`run-as-root` under
    /// `policy.run_as_root = "audit"`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<Finding>,
    /// For a pod sandbox: [`AuditEvent::with_image`] keeps the identity's image (none
    /// under CRI), since only the pod could have written the annotation.
    #[serde(skip)]
    image_from_identity: bool,
}

/// The part of a line `stockade monitor` reads back.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct AuditLine {
    pub event: AuditKind,
    #[serde(default)]
    pub rule: Option<String>,
    #[serde(default)]
    pub profile: Option<String>,
    #[serde(default)]
    pub findings: Vec<Finding>,
}

impl AuditLine {
    pub fn parse(line: &str) -> Result<AuditLine, serde_json::Error> {
        serde_json::from_str(line)
    }
}

impl AuditEvent {
    fn base(kind: AuditKind, container_id: &str, pod: &PodIdentity, profile: &str) -> Self {
        AuditEvent {
            timestamp: rfc3339_utc(SystemTime::now()),
            event: kind,
            container_id: container_id.to_string(),
            sandbox_id: pod.sandbox_id.clone(),
            namespace: pod.namespace.clone(),
            pod: pod.pod_name.clone(),
            container: pod.container_name.clone(),
            image: pod.image.clone(),
            profile: profile.to_string(),
            rule: None,
            reason: None,
            changes: Vec::new(),
            notes: Vec::new(),
            findings: Vec::new(),
            image_from_identity: pod.is_sandbox,
        }
    }

    /// A container hardened with `report`'s changes.
    pub fn hardened(container_id: &str, pod: &PodIdentity, profile: &str, report: &Report) -> Self {
        let mut event = Self::base(AuditKind::Hardened, container_id, pod, profile);
        event.changes = report.changes.clone();
        event.notes = report.notes.clone();
        event.findings = report.findings.clone();
        event
    }

    /// A container the policy refused.
    pub fn refused(
        container_id: &str,
        pod: &PodIdentity,
        profile: &str,
        refusal: &Refusal,
    ) -> Self {
        let mut event = Self::base(AuditKind::Refused, container_id, pod, profile);
        event.rule = Some(refusal.rule.name().to_string());
        event.reason = Some(refusal.reason.clone());
        event
    }

    /// A request that failed for another reason than policy.
    pub fn error(
        container_id: &str,
        pod: &PodIdentity,
        profile: &str,
        reason: impl std::fmt::Display,
    ) -> Self {
        let mut event = Self::base(AuditKind::Error, container_id, pod, profile);
        event.reason = Some(reason.to_string());
        event
    }

    /// The event for the outcome of `hardener::harden` (pass `result.as_ref().map(|h|
    /// &h.report)`) or of `hardener::harden_resources` (`.map(|(_, r)| r)`).
    pub fn from_outcome(
        container_id: &str,
        pod: &PodIdentity,
        profile: &str,
        outcome: Result<&Report, &HardenError>,
    ) -> Self {
        match outcome {
            Ok(report) => Self::hardened(container_id, pod, profile, report),
            Err(HardenError::Refused(refusal)) => {
                Self::refused(container_id, pod, profile, refusal)
            }
            Err(e @ HardenError::InvalidSpec(_)) => Self::error(container_id, pod, profile, e),
        }
    }

    /// The same decision, for an `Update` request: hardened -> update-hardened, refused ->
    /// update-refused (errors stay errors).
    pub fn for_update(mut self) -> Self {
        self.event = match self.event {
            AuditKind::Hardened => AuditKind::UpdateHardened,
            AuditKind::Refused => AuditKind::UpdateRefused,
            other => other,
        };
        self
    }

    /// The container's image (`io.kubernetes.cri.image-name`); ignored for a pod sandbox,
    /// whose identity ([`PodIdentity::image`]) already holds the only trusted one.
    pub fn with_image(mut self, image: Option<&str>) -> Self {
        if !self.image_from_identity {
            self.image = image.filter(|i| !i.is_empty()).map(str::to_string);
        }
        self
    }

    /// The JSON line, newline included.
    pub fn to_line(&self) -> Result<Vec<u8>, serde_json::Error> {
        let mut line = serde_json::to_vec(self)?;
        line.push(b'\n');
        Ok(line)
    }
}

/// An append-only JSON-lines audit log.
#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    /// Creates the directory (0700) and the file (0600) when missing and checks that the
    /// file can be appended to, so a misconfigured path fails when the shim starts.
    pub fn open(path: &Path) -> Result<AuditLog, AuditError> {
        if !path.is_absolute() {
            return Err(AuditError::NotAbsolute {
                path: path.to_path_buf(),
            });
        }
        if let Some(dir) = path.parent() {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| AuditError::CreateDir {
                    path: path.to_path_buf(),
                    source,
                })?;
        }
        let log = AuditLog {
            path: path.to_path_buf(),
        };
        log.open_file()?;
        Ok(log)
    }

    /// The profile's audit log, or None when the profile has none.
    pub fn from_profile(profile: &Profile) -> Result<Option<AuditLog>, AuditError> {
        profile.audit.log.as_deref().map(AuditLog::open).transpose()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn open_file(&self) -> Result<std::fs::File, AuditError> {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.path)
            .map_err(|source| AuditError::Open {
                path: self.path.clone(),
                source,
            })
    }

    /// Appends one line with a single write(2).
    pub fn record(&self, event: &AuditEvent) -> Result<(), AuditError> {
        let line = event.to_line()?;
        let mut file = self.open_file()?;
        // One write call: with O_APPEND the kernel positions and writes it under the inode
        // lock, so concurrent writers' lines never interleave. A retry after a short write
        // could interleave, so a short write is reported instead.
        let written = loop {
            match file.write(&line) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(source) => {
                    return Err(AuditError::Write {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        };
        if written != line.len() {
            return Err(AuditError::ShortWrite {
                path: self.path.clone(),
                written,
                len: line.len(),
            });
        }
        tracing::debug!(
            path = %self.path.display(),
            event = event.event.name(),
            container_id = %event.container_id,
            "audit line written"
        );
        Ok(())
    }
}

/// `2026-11-26T17:30:00.123Z` for a time (times before 1970 print as the epoch).
pub fn rfc3339_utc(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let millis = since.subsec_millis();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (Howard Hinnant's algorithm, in 400-year eras).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // day of era, 0..=146096
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // 0..=399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // 0..=365, from March 1st
    let mp = (5 * doy + 2) / 153; // month from March, 0..=11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hardener::Rule;
    use std::time::Duration;

    fn pod() -> PodIdentity {
        PodIdentity {
            sandbox_id: "sb1".into(),
            is_sandbox: false,
            namespace: Some("prod".into()),
            pod_name: Some("web-0".into()),
            container_name: Some("nginx".into()),
            image: None,
        }
    }

    #[test]
    fn timestamps() {
        let t = |s: u64, ms: u64| rfc3339_utc(UNIX_EPOCH + Duration::from_millis(s * 1000 + ms));
        assert_eq!(t(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(t(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(t(1_795_713_797, 180), "2026-11-26T17:23:17.180Z");
        assert_eq!(t(4_107_542_399, 999), "2100-02-28T23:59:59.999Z");
        assert_eq!(t(4_107_542_400, 0), "2100-03-01T00:00:00.000Z");
    }

    #[test]
    fn refused_line_round_trips() {
        let refusal = Refusal {
            rule: Rule::Privileged,
            reason: "privileged containers are not allowed".into(),
        };
        let event =
            AuditEvent::refused("c1", &pod(), "default", &refusal).with_image(Some("busybox"));
        let line = String::from_utf8(event.to_line().unwrap()).unwrap();
        assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event"], "refused");
        assert_eq!(v["rule"], "privileged");
        assert_eq!(v["namespace"], "prod");
        assert_eq!(v["pod"], "web-0");
        assert_eq!(v["container"], "nginx");
        assert_eq!(v["sandbox_id"], "sb1");
        assert_eq!(v["image"], "busybox");
        assert_eq!(v["profile"], "default");
        let back = AuditLine::parse(&line).unwrap();
        assert_eq!(back.event, AuditKind::Refused);
        assert_eq!(back.rule.as_deref(), Some("privileged"));
    }

    /// An audited rule (run-as-root under the default profile) is in the line, and the
    /// monitor reads it back.
    #[test]
    fn findings_are_recorded_and_read_back() {
        let report = Report {
            findings: vec![Finding {
                rule: Rule::RunAsRoot.name().into(),
                reason: "runs as UID 0".into(),
            }],
            ..Default::default()
        };
        let line = AuditEvent::from_outcome("c", &pod(), "default", Ok(&report))
            .to_line()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["event"], "hardened");
        assert_eq!(v["findings"][0]["rule"], "run-as-root");
        let back = AuditLine::parse(std::str::from_utf8(&line).unwrap()).unwrap();
        assert_eq!(back.findings, report.findings);
    }

    #[test]
    fn a_sandboxs_image_annotation_is_not_audited() {
        let sandbox = PodIdentity {
            is_sandbox: true,
            ..pod()
        };
        let report = Report::default();
        let e = AuditEvent::hardened("sb1", &sandbox, "p", &report).with_image(Some("evil/x"));
        assert_eq!(e.image, None);
        let e = AuditEvent::hardened("c", &pod(), "p", &report).with_image(Some("nginx"));
        assert_eq!(e.image.as_deref(), Some("nginx"));
    }

    #[test]
    fn update_kinds_and_outcomes() {
        let report = Report {
            changes: vec![Change {
                guard: "cgroups",
                what: "memory clamped".into(),
            }],
            notes: vec!["n".into()],
            findings: Vec::new(),
        };
        let e = AuditEvent::from_outcome("c", &pod(), "p", Ok(&report)).for_update();
        assert_eq!(e.event, AuditKind::UpdateHardened);
        let v: serde_json::Value = serde_json::from_slice(&e.to_line().unwrap()).unwrap();
        assert_eq!(v["event"], "update-hardened");
        assert_eq!(v["changes"][0]["guard"], "cgroups");
        assert!(v.get("rule").is_none());
        assert!(v.get("findings").is_none(), "no findings, no key");

        let err = HardenError::Refused(Refusal {
            rule: Rule::MemoryCeiling,
            reason: "too much".into(),
        });
        let e = AuditEvent::from_outcome("c", &pod(), "p", Err(&err)).for_update();
        assert_eq!(e.event, AuditKind::UpdateRefused);
        assert_eq!(e.rule.as_deref(), Some("memory-ceiling"));

        let err = HardenError::InvalidSpec("no root".into());
        let e = AuditEvent::from_outcome("c", &pod(), "p", Err(&err)).for_update();
        assert_eq!(e.event, AuditKind::Error);
        assert!(e.reason.unwrap().contains("no root"));
    }

    #[test]
    fn open_refuses_relative_paths() {
        assert!(matches!(
            AuditLog::open(Path::new("audit.jsonl")),
            Err(AuditError::NotAbsolute { .. })
        ));
    }
}
