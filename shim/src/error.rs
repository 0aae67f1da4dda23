//! The shim's one error type, and its one conversion to the ttrpc status containerd reads.
//!
//! containerd acts on the code, not the text: NotFound on Kill or Delete means "already
//! gone" (CRI's StopContainer then succeeds), FailedPrecondition means "not in a state for
//! that", PermissionDenied carries a policy refusal to kubelet's events. Everything the shim
//! did not expect is Internal, with the whole cause chain in the message.

use std::path::Path;

use containerd_shim_protos::ttrpc::{self, Code};
use stockade_runtime::hardener::HardenError;

use crate::task::lifecycle::TransitionError;

#[derive(Debug, thiserror::Error)]
pub enum ShimError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    /// A policy refusal; the message names the rule.
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unimplemented(String),
    #[error("{0:#}")]
    Internal(#[from] anyhow::Error),
}

pub type Result<T> = std::result::Result<T, ShimError>;

impl ShimError {
    pub fn code(&self) -> Code {
        match self {
            ShimError::NotFound(_) => Code::NOT_FOUND,
            ShimError::AlreadyExists(_) => Code::ALREADY_EXISTS,
            ShimError::InvalidArgument(_) => Code::INVALID_ARGUMENT,
            ShimError::FailedPrecondition(_) => Code::FAILED_PRECONDITION,
            ShimError::Refused(_) => Code::PERMISSION_DENIED,
            ShimError::ResourceExhausted(_) => Code::RESOURCE_EXHAUSTED,
            ShimError::Unimplemented(_) => Code::UNIMPLEMENTED,
            ShimError::Internal(_) => Code::INTERNAL,
        }
    }

    /// The hardener's verdict on a spec read from `source` (named in an invalid-spec error).
    pub fn from_harden(e: HardenError, source: Option<&Path>) -> ShimError {
        match (&e, source) {
            (HardenError::Refused(_), _) => ShimError::Refused(e.to_string()),
            (HardenError::InvalidSpec(problem), Some(path)) => {
                ShimError::InvalidArgument(format!("invalid spec {}: {problem}", path.display()))
            }
            (HardenError::InvalidSpec(_), None) => ShimError::InvalidArgument(e.to_string()),
        }
    }

    pub fn container_not_found(id: &str) -> ShimError {
        ShimError::NotFound(format!("container {id} not found"))
    }

    pub fn not_running(id: &str) -> ShimError {
        ShimError::FailedPrecondition(format!("container {id} is not running"))
    }

    pub fn already_finished() -> ShimError {
        ShimError::NotFound("process already finished".to_string())
    }
}

impl From<TransitionError> for ShimError {
    fn from(e: TransitionError) -> ShimError {
        ShimError::FailedPrecondition(e.to_string())
    }
}

impl From<ShimError> for ttrpc::Error {
    fn from(e: ShimError) -> ttrpc::Error {
        ttrpc::Error::RpcStatus(ttrpc::get_status(e.code(), e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stockade_runtime::hardener::Refusal;

    fn status(e: ShimError) -> (Code, String) {
        match ttrpc::Error::from(e) {
            ttrpc::Error::RpcStatus(s) => (s.code(), s.message),
            other => panic!("not a status: {other:?}"),
        }
    }

    #[test]
    fn each_kind_maps_to_the_code_containerd_acts_on() {
        assert_eq!(
            status(ShimError::container_not_found("c1")),
            (Code::NOT_FOUND, "container c1 not found".into())
        );
        assert_eq!(
            status(ShimError::not_running("c1")).0,
            Code::FAILED_PRECONDITION
        );
        assert_eq!(status(ShimError::already_finished()).0, Code::NOT_FOUND);
        let internal = ShimError::from(anyhow::anyhow!("inner").context("outer"));
        assert_eq!(status(internal), (Code::INTERNAL, "outer: inner".into()));
    }

    #[test]
    fn hardener_verdicts_keep_the_rule_and_the_spec_path() {
        let refused = HardenError::Refused(Refusal {
            rule: stockade_runtime::hardener::Rule::HostPid,
            reason: "host PID namespace".into(),
        });
        let (code, msg) = status(ShimError::from_harden(refused, None));
        assert_eq!(code, Code::PERMISSION_DENIED);
        assert!(msg.contains("host-pid"), "{msg}");
        let invalid = HardenError::InvalidSpec("linux.namespaces: bad".into());
        let (code, msg) = status(ShimError::from_harden(
            invalid,
            Some(Path::new("/b/config.json")),
        ));
        assert_eq!(code, Code::INVALID_ARGUMENT);
        assert_eq!(msg, "invalid spec /b/config.json: linux.namespaces: bad");
    }
}
