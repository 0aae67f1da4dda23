//! Secrets in the environment (rule `secret-in-env`): variables whose name or value looks
//! like a secret. Secrets belong in secret volumes (mounted sealed), not in an environment
//! every process inherits and /proc/PID/environ shows. Findings name the variable and why,
//! never the value.

use serde::{Deserialize, Serialize};

use super::{Refusal, Report, Rule};
use crate::oci_spec::runtime::Spec;
use crate::volume_settings::SecretInEnv;

/// Why a variable looks like a secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SecretReason {
    /// The name matches `*_PASSWORD`, `*_TOKEN`, `*SECRET*` (any case).
    Name,
    /// The value holds a PEM private key.
    PemPrivateKey,
}

/// One variable that looks like a secret: its name only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretEnvFinding {
    pub name: String,
    pub reason: SecretReason,
}

fn name_looks_secret(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    upper.ends_with("_PASSWORD")
        || upper == "PASSWORD"
        || upper.ends_with("_TOKEN")
        || upper.contains("SECRET")
}

/// `-----BEGIN [RSA |EC |OPENSSH |ENCRYPTED |DSA ]PRIVATE KEY-----`.
fn value_is_private_key(value: &str) -> bool {
    value.match_indices("-----BEGIN ").any(|(i, _)| {
        let rest = &value[i + "-----BEGIN ".len()..];
        rest.split_once("-----")
            .is_some_and(|(label, _)| label.ends_with("PRIVATE KEY") && label.len() < 40)
    })
}

/// The variables of `process.env` that look like secrets, in order.
pub fn scan(spec: &Spec) -> Vec<SecretEnvFinding> {
    let env = spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    env.iter()
        .filter_map(|entry| {
            let (name, value) = entry.split_once('=').unwrap_or((entry, ""));
            let reason = if value_is_private_key(value) {
                SecretReason::PemPrivateKey
            } else if name_looks_secret(name) {
                SecretReason::Name
            } else {
                return None;
            };
            Some(SecretEnvFinding {
                name: name.to_string(),
                reason,
            })
        })
        .collect()
}

/// `NAME (why), ...`, for findings and refusals.
fn describe(findings: &[SecretEnvFinding]) -> String {
    let parts: Vec<String> = findings
        .iter()
        .map(|f| {
            let why = match f.reason {
                SecretReason::Name => "its name",
                SecretReason::PemPrivateKey => "a PEM private key",
            };
            format!("{} ({why})", f.name)
        })
        .collect();
    parts.join(", ")
}

/// Record a finding in the audit line, or refuse when the profile denies secrets in the
/// environment.
pub(crate) fn check(spec: &Spec, verdict: SecretInEnv, report: &mut Report) -> Result<(), Refusal> {
    let findings = scan(spec);
    if findings.is_empty() {
        return Ok(());
    }
    let what = describe(&findings);
    if verdict == SecretInEnv::Deny {
        return Err(Refusal {
            rule: Rule::SecretInEnv,
            reason: format!(
                "the environment holds what looks like secrets: {what}; mount them from a \
                 secret volume instead"
            ),
        });
    }
    report.finding(
        Rule::SecretInEnv,
        format!("environment variables that look like secrets (values not recorded): {what}"),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(env: &[&str]) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {"cwd": "/", "user": {"uid": 0, "gid": 0}, "env": env}
        }))
        .unwrap()
    }

    #[test]
    fn names_and_pem_values_are_found_values_never_kept() {
        let key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----";
        let s = spec(&[
            "PATH=/bin",
            "DB_PASSWORD=hunter2",
            "GITHUB_TOKEN=ghp_x",
            "AWS_SECRET_ACCESS_KEY=abc",
            "client_secret=x",
            &format!("DEPLOY_KEY={key}"),
            "CERT=-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----",
            "TOKENS_DIR=/t",
            "HOME=/root",
        ]);
        let found = scan(&s);
        let names: Vec<&str> = found.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "DB_PASSWORD",
                "GITHUB_TOKEN",
                "AWS_SECRET_ACCESS_KEY",
                "client_secret",
                "DEPLOY_KEY"
            ]
        );
        assert_eq!(found[4].reason, SecretReason::PemPrivateKey);
        let json = serde_json::to_string(&found).unwrap();
        assert!(
            !json.contains("hunter2") && !json.contains("b3BlbnNzaC1rZXk"),
            "{json}"
        );
    }

    #[test]
    fn audit_notes_deny_refuses() {
        let s = spec(&["API_TOKEN=t0k3n"]);
        let mut report = Report::default();
        check(&s, SecretInEnv::Audit, &mut report).unwrap();
        assert_eq!(report.findings.len(), 1);
        assert_eq!(report.findings[0].rule, "secret-in-env");
        assert!(report.findings[0].reason.contains("API_TOKEN (its name)"));
        assert!(!format!("{report:?}").contains("t0k3n"));
        let refusal = check(&s, SecretInEnv::Deny, &mut Report::default()).unwrap_err();
        assert_eq!(refusal.rule, Rule::SecretInEnv);
        assert!(refusal.reason.contains("API_TOKEN") && !refusal.reason.contains("t0k3n"));
        check(
            &spec(&["PATH=/bin"]),
            SecretInEnv::Deny,
            &mut Report::default(),
        )
        .unwrap();
    }
}
