//! The runtimes a scenario can run under: runc (to validate the harness) and Stockade
//! with its two profiles.

use crate::containerd::{
    HANDLER_RUNC, HANDLER_STOCKADE, HANDLER_STOCKADE_RECORD, HANDLER_STOCKADE_STRICT, RUNC_RUNTIME,
    STOCKADE_RUNTIME,
};
use crate::paths;
use anyhow::Result;
use std::path::PathBuf;
use stockade_runtime::profile::{Profile, RootPolicy};

#[derive(Debug, Clone)]
pub struct TestRuntime {
    pub label: &'static str,
    /// `ctr run --runtime` value.
    pub ctr_runtime: &'static str,
    /// CRI runtime handler.
    pub cri_handler: &'static str,
    /// The Stockade profile, None for runc.
    pub profile: Option<PathBuf>,
}

impl TestRuntime {
    pub fn runc() -> TestRuntime {
        TestRuntime {
            label: "runc",
            ctr_runtime: RUNC_RUNTIME,
            cri_handler: HANDLER_RUNC,
            profile: None,
        }
    }

    /// Stockade with profiles/default.toml (errors if the profile is missing).
    pub fn stockade() -> Result<TestRuntime> {
        Ok(TestRuntime {
            label: "stockade",
            ctr_runtime: STOCKADE_RUNTIME,
            cri_handler: HANDLER_STOCKADE,
            profile: Some(paths::profile("default.toml")?),
        })
    }

    /// Stockade with profiles/strict.toml.
    pub fn stockade_strict() -> Result<TestRuntime> {
        Ok(TestRuntime {
            label: "stockade-strict",
            ctr_runtime: STOCKADE_RUNTIME,
            cri_handler: HANDLER_STOCKADE_STRICT,
            profile: Some(paths::profile("strict.toml")?),
        })
    }

    /// Stockade with profiles/record.toml (record mode, CRI handler `stockade-record`).
    pub fn stockade_record() -> Result<TestRuntime> {
        Ok(TestRuntime {
            label: "stockade-record",
            ctr_runtime: STOCKADE_RUNTIME,
            cri_handler: HANDLER_STOCKADE_RECORD,
            profile: Some(paths::profile("record.toml")?),
        })
    }

    pub fn hardened(&self) -> bool {
        self.profile.is_some()
    }

    /// Whether the profile refuses app containers running as root (`run-as-root`), so a
    /// test's app container needs a non-root user.
    pub fn refuses_root(&self) -> bool {
        self.profile.as_ref().is_some_and(|p| {
            Profile::load(p).is_ok_and(|p| p.policy.run_as_root == RootPolicy::Deny)
        })
    }

    /// The `ctr run` flags selecting this runtime (and its profile).
    pub fn ctr_run_args(&self) -> Vec<String> {
        let mut args = vec!["--runtime".to_string(), self.ctr_runtime.to_string()];
        if let Some(p) = &self.profile {
            args.push("--runtime-config-path".into());
            args.push(p.display().to_string());
        }
        args
    }
}
