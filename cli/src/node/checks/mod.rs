//! Judging a node's facts: what on it weakens Stockade's containers, each finding with why
//! it matters and the fix. Pure: [`judge`] reads only [`NodeFacts`].

mod containerd;
mod kernel;
mod node;

use super::facts::NodeFacts;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Worth knowing; nothing to fix for containers' sake.
    Info,
    /// Weakens containers.
    Warn,
    /// Breaks Stockade, or leaves containers open to the host.
    Fail,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Info => "info",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// A stable name, e.g. `kernel.kptr_restrict`.
    pub check: String,
    pub status: Status,
    /// What was found, in a line.
    pub observed: String,
    /// Why it matters for containers (empty when ok).
    pub why: String,
    /// What to do (empty when ok).
    pub fix: String,
}

impl Finding {
    fn ok(check: impl Into<String>, observed: impl Into<String>) -> Finding {
        Finding {
            check: check.into(),
            status: Status::Ok,
            observed: observed.into(),
            why: String::new(),
            fix: String::new(),
        }
    }

    fn new(
        status: Status,
        check: impl Into<String>,
        observed: impl Into<String>,
        why: impl Into<String>,
        fix: impl Into<String>,
    ) -> Finding {
        Finding {
            check: check.into(),
            status,
            observed: observed.into(),
            why: why.into(),
            fix: fix.into(),
        }
    }
}

/// Every finding, in the order kernel, containerd, cgroups, ID pool, profiles.
pub fn judge(facts: &NodeFacts) -> Vec<Finding> {
    let mut findings = kernel::judge(facts);
    findings.extend(containerd::judge(facts));
    findings.extend(node::judge(facts));
    findings
}
