//! The runtimes under comparison, in run order (runc first: it is the baseline).

use anyhow::{bail, Result};
use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{ContainerConfig, SecurityProfile};
use stockade_integration::runtimes::TestRuntime;
use stockade_integration::Cri;

#[derive(Debug, Clone)]
pub struct Rt {
    pub label: String,
    pub rt: TestRuntime,
    /// runc with the container runtime's default seccomp profile (RuntimeDefault):
    /// a reference for what any seccomp filter costs.
    pub runc_seccomp: bool,
    /// Set when the runtime cannot run at all this time; every section reports it.
    pub failed: Option<String>,
}

impl Rt {
    pub fn from_label(label: &str) -> Result<Rt> {
        let rt = match label {
            "runc" | "runc-seccomp" => TestRuntime::runc(),
            "stockade" => TestRuntime::stockade()?,
            "stockade-strict" => TestRuntime::stockade_strict()?,
            other => {
                bail!("unknown runtime {other:?} (runc, stockade, stockade-strict, runc-seccomp)")
            }
        };
        Ok(Rt {
            label: label.to_string(),
            rt,
            runc_seccomp: label == "runc-seccomp",
            failed: None,
        })
    }

    /// A busybox container config for this runtime (RuntimeDefault seccomp for
    /// runc-seccomp; nothing else differs between runtimes).
    pub fn container_config(&self, cri: &Cri, name: &str, cmd: &[&str]) -> ContainerConfig {
        let mut cfg = cri.container_config(name, cmd);
        if self.runc_seccomp {
            if let Some(sc) = cfg.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
                sc.seccomp = Some(SecurityProfile {
                    profile_type: ProfileType::RuntimeDefault as i32,
                    localhost_ref: String::new(),
                });
            }
        }
        cfg
    }

    /// One line for the report.
    pub fn description(&self) -> String {
        match (&self.rt.profile, self.runc_seccomp) {
            (Some(p), _) => format!("Stockade shim with profile {}", p.display()),
            (None, true) => "runc with RuntimeDefault seccomp (containerd's default profile): \
                             a reference for the cost of any seccomp filter"
                .into(),
            (None, false) => "runc (containerd-shim-runc-v2), no seccomp: what CRI gives a pod \
                              that asks for none (kubelet's default)"
                .into(),
        }
    }

    /// `ctr run` flags selecting this runtime.
    pub fn ctr_args(&self) -> Vec<String> {
        let mut args = self.rt.ctr_run_args();
        if self.runc_seccomp {
            args.push("--seccomp".into());
        }
        args
    }

    pub fn handler(&self) -> &str {
        self.rt.cri_handler
    }

    /// File name of this runtime's shim binary.
    pub fn shim_binary(&self) -> &'static str {
        if self.rt.hardened() {
            stockade_integration::paths::SHIM_BINARY
        } else {
            "containerd-shim-runc-v2"
        }
    }
}

/// The runtimes from the command line, runc first and each once.
pub fn parse(labels: &[String]) -> Result<Vec<Rt>> {
    let mut out = vec![Rt::from_label("runc")?];
    for l in labels {
        let l = l.trim();
        if l.is_empty() || out.iter().any(|r| r.label == l) {
            continue;
        }
        out.push(Rt::from_label(l)?);
    }
    Ok(out)
}

/// The runtimes that can run; the others are recorded as failed in `sec`.
pub fn active(rts: &[Rt], sec: &mut crate::model::Section) -> Vec<Rt> {
    let mut out = Vec::new();
    for rt in rts {
        match &rt.failed {
            Some(e) => sec.fail(&rt.label, &anyhow::anyhow!("{e}")),
            None => out.push(rt.clone()),
        }
    }
    out
}
