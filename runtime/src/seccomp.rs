//! Seccomp: OCI `LinuxSeccomp` profiles compiled to BPF with `seccompiler`, and installed.
//!
//! CONTRACT (owned by the seccomp helper; keep these signatures, add what you need):
//! - `load_file(path) -> Result<LinuxSeccomp, SeccompError>`: read and parse an OCI seccomp
//!   JSON file; errors name the file.
//! - `compile(&LinuxSeccomp) -> Result<CompiledFilter, SeccompError>` for the running arch.
//! - `CompiledFilter::install(&self, log_denials: bool)`: install in the calling process
//!   (sets no_new_privs); called in the container's init right before exec.
#![allow(dead_code)]

use crate::oci_spec::runtime::LinuxSeccomp;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("{0}")]
    Todo(String),
}

/// One profile compiled for the running architecture: one or more BPF programs, installed
/// in order.
#[derive(Debug, Clone)]
pub struct CompiledFilter {
    programs: Vec<seccompiler::BpfProgram>,
}

pub fn load_file(_path: &Path) -> Result<LinuxSeccomp, SeccompError> {
    todo!()
}

pub fn compile(_profile: &LinuxSeccomp) -> Result<CompiledFilter, SeccompError> {
    todo!()
}

impl CompiledFilter {
    pub fn install(&self, _log_denials: bool) -> Result<(), SeccompError> {
        todo!()
    }
}
