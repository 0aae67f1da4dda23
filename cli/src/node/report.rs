//! Findings as a table (for people) or JSON (for tools).

use super::checks::{Finding, Status};
use super::facts::NodeFacts;

/// One line per finding (status, check, what was found); below each one that is not ok,
/// why it matters and the fix; a count at the end.
pub fn table(findings: &[Finding]) -> String {
    let width = findings
        .iter()
        .map(|f| f.check.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let mut out = format!("{:<6} {:<width$}  {}\n", "STATUS", "CHECK", "FOUND");
    for f in findings {
        out.push_str(&format!(
            "{:<6} {:<width$}  {}\n",
            f.status.label(),
            f.check,
            f.observed
        ));
        if f.status != Status::Ok {
            let indent = " ".repeat(width + 9);
            out.push_str(&format!("{indent}why: {}\n", f.why));
            out.push_str(&format!("{indent}fix: {}\n", f.fix));
        }
    }
    let count = |s| findings.iter().filter(|f| f.status == s).count();
    out.push_str(&format!(
        "\n{} ok, {} info, {} warn, {} fail\n",
        count(Status::Ok),
        count(Status::Info),
        count(Status::Warn),
        count(Status::Fail)
    ));
    out
}

pub fn json(findings: &[Finding], facts: &NodeFacts) -> serde_json::Result<String> {
    let count = |s| findings.iter().filter(|f| f.status == s).count();
    serde_json::to_string_pretty(&serde_json::json!({
        "summary": {
            "ok": count(Status::Ok),
            "info": count(Status::Info),
            "warn": count(Status::Warn),
            "fail": count(Status::Fail),
        },
        "findings": findings,
        "facts": facts,
    }))
}
