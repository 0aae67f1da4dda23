//! Reading a container's OCI config.json: errors name the file, the key and the problem
//! (oci-spec's own loader reports only "serde failed").

use crate::oci_spec::runtime::Spec;
use std::path::{Path, PathBuf};

/// A config.json that could not be read or is not an OCI runtime spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read spec {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid spec {}: {}", path.display(), describe(key, problem))]
    Invalid {
        path: PathBuf,
        /// Dotted key path (`linux.resources.memory.limit`); empty when the document as a
        /// whole is wrong (not JSON, not an object).
        key: String,
        /// What is wrong, with the line and column.
        problem: String,
    },
}

fn describe(key: &str, problem: &str) -> String {
    if key.is_empty() {
        problem.to_string()
    } else {
        format!("key `{key}`: {problem}")
    }
}

/// Reads and parses `path` as an OCI runtime spec.
pub fn load(path: &Path) -> Result<Spec, SpecError> {
    let text = std::fs::read(path).map_err(|source| SpecError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, path)
}

/// Parses an OCI runtime spec; `path` names it in errors.
pub fn parse(text: &[u8], path: &Path) -> Result<Spec, SpecError> {
    // serde would take an array as the spec's fields in order.
    if text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        return Err(SpecError::Invalid {
            path: path.to_path_buf(),
            key: String::new(),
            problem: "an array, not a JSON object".into(),
        });
    }
    let mut deserializer = serde_json::Deserializer::from_slice(text);
    let spec: Spec = serde_path_to_error::deserialize(&mut deserializer)
        .map_err(|e| invalid(path, e.path().to_string(), e.into_inner()))?;
    // Trailing garbage after the document.
    deserializer
        .end()
        .map_err(|e| invalid(path, String::new(), e))?;
    Ok(spec)
}

fn invalid(path: &Path, key: String, error: serde_json::Error) -> SpecError {
    // `?` stands for a map key that was never read (the document ended, or was not JSON).
    let key = key.trim_end_matches(".?");
    let key = if key == "." || key == "?" {
        String::new()
    } else {
        key.to_string()
    };
    SpecError::Invalid {
        path: path.to_path_buf(),
        key,
        problem: error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        parse(json.as_bytes(), Path::new("/b/config.json"))
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn errors_name_the_file_the_key_and_the_problem() {
        let cases: &[(&str, &[&str])] = &[
            ("", &["/b/config.json", "EOF"]),
            ("{\"process\": ", &["/b/config.json", "EOF", "line 1"]),
            ("{\"process\": {\"user\": {", &["key `process.user`", "EOF"]),
            ("[]", &["/b/config.json", "not a JSON object"]),
            ("42", &["/b/config.json", "invalid type"]),
            ("{} {}", &["/b/config.json", "trailing characters"]),
            (
                r#"{"ociVersion":"1.0.2","process":42}"#,
                &["key `process`", "invalid type: integer `42`"],
            ),
            (
                r#"{"ociVersion":"1.0.2","process":{"cwd":"/","user":{"uid":"root","gid":0}}}"#,
                &["key `process.user.uid`", "\"root\""],
            ),
            (
                r#"{"ociVersion":"1.0.2","linux":{"resources":{"cpu":{"period":-1}}}}"#,
                &["key `linux.resources.cpu.period`", "-1"],
            ),
            (
                r#"{"ociVersion":"1.0.2","linux":{"seccomp":{"defaultAction":"SCMP_ACT_ALLOW",
                   "syscalls":[{"names":["getpid"],"action":"SCMP_ACT_EXPLODE"}]}}}"#,
                &["key `linux.seccomp.syscalls[0].action`", "SCMP_ACT_EXPLODE"],
            ),
            (
                r#"{"ociVersion":"1.0.2","annotations":{"a":1}}"#,
                &["key `annotations.a`", "invalid type"],
            ),
        ];
        for (json, needles) in cases {
            let e = err(json);
            assert!(e.starts_with("invalid spec /b/config.json"), "{e}");
            assert!(!e.contains("?`"), "a key never read is not named: {e}");
            for needle in *needles {
                assert!(e.contains(needle), "{json}: {e:?} lacks {needle:?}");
            }
        }
    }

    #[test]
    fn unreadable_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = load(&dir.path().join("config.json"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("cannot read spec") && e.contains("config.json"),
            "{e}"
        );
    }

    #[test]
    fn a_valid_spec_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/ctr-default.json");
        let spec = load(&path).unwrap();
        assert!(spec.process().is_some());
    }
}
