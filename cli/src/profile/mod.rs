//! `stockade profile record` and `stockade profile diff`: a workload's own seccomp profile
//! from a recording, and how it narrows the default.

pub mod diff;
pub mod record;
