//! Following Stockade's audit trail (JSON lines written by [`stockade_runtime::audit::AuditLog`]) and
//! counting decisions and refusals by rule.

use crate::tail::LineTail;
use std::collections::BTreeMap;
use std::path::Path;
use stockade_runtime::audit::{AuditKind, AuditLine};

/// Counts read from audit trails.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TrailCounts {
    /// Policy refusals (create and update) by rule name.
    pub refusals: BTreeMap<String, u64>,
    /// Every decision by event name.
    pub decisions: BTreeMap<&'static str, u64>,
    /// Findings (what a rule in audit mode let through) by (rule, profile).
    pub findings: BTreeMap<(String, String), u64>,
    /// Lines that were not audit events.
    pub invalid_lines: u64,
}

impl TrailCounts {
    /// Counts one line (without its newline).
    pub fn count_line(&mut self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        match AuditLine::parse(line) {
            Ok(event) => {
                *self.decisions.entry(event.event.name()).or_default() += 1;
                if event.event.is_refusal() {
                    let rule = event.rule.unwrap_or_else(|| "unknown".into());
                    *self.refusals.entry(rule).or_default() += 1;
                }
                let profile = event.profile.unwrap_or_else(|| "unknown".into());
                for finding in event.findings {
                    *self
                        .findings
                        .entry((finding.rule, profile.clone()))
                        .or_default() += 1;
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "audit trail line is not an audit event");
                self.invalid_lines += 1;
            }
        }
    }

    pub fn all_kinds() -> impl Iterator<Item = AuditKind> {
        AuditKind::ALL.into_iter()
    }
}

/// Reads a trail from its start and then whatever is appended (rotation followed).
#[derive(Debug)]
pub struct TrailTail {
    lines: LineTail,
}

impl TrailTail {
    pub fn new(path: &Path) -> Self {
        TrailTail {
            lines: LineTail::from_start(path),
        }
    }

    pub fn path(&self) -> &Path {
        self.lines.path()
    }

    /// Counts every complete line appended since the last poll. A missing file is not an
    /// error (nothing was decided yet).
    pub fn poll(&mut self, counts: &mut TrailCounts) -> std::io::Result<()> {
        self.lines.poll(|line| counts.count_line(line))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    const REFUSED: &str = r#"{"event":"refused","rule":"privileged","profile":"default"}"#;
    const HARDENED: &str = r#"{"event":"hardened","profile":"default"}"#;
    const WITH_FINDINGS: &str = r#"{"event":"hardened","profile":"default","findings":[{"rule":"run-as-root","reason":"runs as UID 0"},{"rule":"secret-in-env","reason":"API_TOKEN"}]}"#;
    const UPDATE_REFUSED: &str = r#"{"event":"update-refused","rule":"memory-ceiling"}"#;

    #[test]
    fn counts_lines_and_follows_appends_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let mut tail = TrailTail::new(&path);
        let mut counts = TrailCounts::default();
        tail.poll(&mut counts).unwrap(); // missing: fine
        assert_eq!(counts, TrailCounts::default());

        let mut f = std::fs::File::create(&path).unwrap();
        write!(f, "{REFUSED}\n{HARDENED}\nnot json\n{UPDATE_REFUSED}").unwrap();
        tail.poll(&mut counts).unwrap();
        assert_eq!(counts.refusals.get("privileged"), Some(&1));
        assert_eq!(counts.refusals.get("memory-ceiling"), None, "partial line");
        assert_eq!(counts.invalid_lines, 1);
        writeln!(f).unwrap();
        tail.poll(&mut counts).unwrap();
        assert_eq!(counts.refusals.get("memory-ceiling"), Some(&1));
        assert_eq!(counts.decisions.get("hardened"), Some(&1));
        assert!(counts.findings.is_empty());
        writeln!(f, "{WITH_FINDINGS}").unwrap();
        tail.poll(&mut counts).unwrap();
        let key = |rule: &str| (rule.to_string(), "default".to_string());
        assert_eq!(counts.findings.get(&key("run-as-root")), Some(&1));
        assert_eq!(counts.findings.get(&key("secret-in-env")), Some(&1));
        assert_eq!(counts.decisions.get("hardened"), Some(&2));

        // Rotation: rename away (after one more line), new file at the path.
        writeln!(f, "{REFUSED}").unwrap();
        std::fs::rename(&path, dir.path().join("audit.jsonl.1")).unwrap();
        std::fs::write(&path, format!("{REFUSED}\n")).unwrap();
        tail.poll(&mut counts).unwrap();
        assert_eq!(counts.refusals.get("privileged"), Some(&3));

        // Truncation.
        std::fs::write(&path, "").unwrap();
        tail.poll(&mut counts).unwrap();
        std::fs::write(&path, format!("{HARDENED}\n")).unwrap();
        tail.poll(&mut counts).unwrap();
        assert_eq!(counts.decisions.get("hardened"), Some(&3));
        assert_eq!(counts.refusals.get("privileged"), Some(&3));
    }
}
