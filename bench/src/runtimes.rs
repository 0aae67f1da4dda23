//! The runtimes under comparison, in run order (runc first: it is the baseline), and
//! the floor: `null`, the bench's own shim (bench/null-shim) that runs the command as a
//! plain chrooted child, so its figures are containerd's own share.

use anyhow::{bail, Result};
use k8s_cri::v1::security_profile::ProfileType;
use k8s_cri::v1::{ContainerConfig, SecurityProfile};
use stockade_integration::runtimes::TestRuntime;
use stockade_integration::Cri;

/// runtime_type, CRI handler and shim binary of the floor (bench/null-shim).
pub const NULL_RUNTIME: &str = "io.containerd.stockadenull.v1";
pub const NULL_HANDLER: &str = "null";
pub const NULL_SHIM_BINARY: &str = "containerd-shim-stockadenull-v1";
/// Label of the floor in results and reports.
pub const FLOOR: &str = "null";

/// What the private containerd needs beyond the harness's config: the floor's handler.
pub fn containerd_extra_config() -> String {
    format!(
        "\n[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.{NULL_HANDLER}]\n  \
         runtime_type = \"{NULL_RUNTIME}\"\n"
    )
}

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
            FLOOR => TestRuntime {
                label: FLOOR,
                ctr_runtime: NULL_RUNTIME,
                cri_handler: NULL_HANDLER,
                profile: None,
            },
            other => {
                bail!(
                    "unknown runtime {other:?} (runc, stockade, stockade-strict, runc-seccomp, \
                     null)"
                )
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

    /// The floor (null runtime), not a runtime under comparison.
    pub fn is_floor(&self) -> bool {
        self.label == FLOOR
    }

    /// One line for the report.
    pub fn description(&self) -> String {
        if self.is_floor() {
            return "the floor: bench/null-shim, a shim v2 that forks the command chrooted into \
                    the rootfs (no namespaces, cgroups or hardening); its figures are \
                    containerd's own share"
                .into();
        }
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
        if self.is_floor() {
            NULL_SHIM_BINARY
        } else if self.rt.hardened() {
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

/// [`active`] without the floor, for sections where it has no meaning.
pub fn active_runtimes(rts: &[Rt], sec: &mut crate::model::Section) -> Vec<Rt> {
    let without: Vec<Rt> = rts.iter().filter(|r| !r.is_floor()).cloned().collect();
    active(&without, sec)
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
