//! Which pod a container belongs to, read from the CRI annotations containerd sets.
//!
//! Trust: containerd's CRI plugin writes these annotations after the ones a pod may pass
//! through (`pod_annotations` / `container_annotations` in its runtime config), so CRI's
//! values win wherever it writes them. It writes container-type, sandbox-id,
//! sandbox-name and sandbox-namespace on every container, container-name and image-name
//! only on app containers. On a pod sandbox, container-name and image-name can therefore
//! come from the pod itself: they are ignored there. Outside CRI (`ctr`), whoever writes
//! the annotations is node root. Nothing else in a spec decides a pod's identity, its ID
//! range (keyed by the sandbox id) or its profile (containerd's runtime options).

use crate::hardener::{Refusal, Rule};
use std::collections::HashMap;

/// containerd's CRI plugin sets these on every container it creates.
pub const ANNOTATION_CONTAINER_TYPE: &str = "io.kubernetes.cri.container-type";
pub const ANNOTATION_SANDBOX_ID: &str = "io.kubernetes.cri.sandbox-id";
pub const ANNOTATION_SANDBOX_NAME: &str = "io.kubernetes.cri.sandbox-name";
pub const ANNOTATION_SANDBOX_NAMESPACE: &str = "io.kubernetes.cri.sandbox-namespace";
/// The pod's UID (kubelet's `<root-dir>/pods/<uid>/` holds its volumes).
pub const ANNOTATION_SANDBOX_UID: &str = "io.kubernetes.cri.sandbox-uid";
pub const ANNOTATION_CONTAINER_NAME: &str = "io.kubernetes.cri.container-name";
pub const ANNOTATION_IMAGE_NAME: &str = "io.kubernetes.cri.image-name";
/// The container-type value of a pod sandbox.
const CONTAINER_TYPE_SANDBOX: &str = "sandbox";

/// A container's place in its pod. Containers started without CRI (e.g. `ctr run`) are
/// each a pod of their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    /// The pod sandbox's container id (the pod's key everywhere in Stockade).
    pub sandbox_id: String,
    /// True for the sandbox (pause) container, which creates the pod's namespaces.
    pub is_sandbox: bool,
    /// Kubernetes namespace, pod and container names, when CRI gave them.
    pub namespace: Option<String>,
    pub pod_name: Option<String>,
    pub container_name: Option<String>,
    /// The image name CRI wrote ([`trusted_image_name`]).
    pub image: Option<String>,
}

fn get<'a>(annotations: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    annotations
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// A CRI pod sandbox (container-type `sandbox`), as opposed to a CRI app container or a
/// container started without CRI.
pub fn is_cri_sandbox(annotations: &HashMap<String, String>) -> bool {
    get(annotations, ANNOTATION_CONTAINER_TYPE) == Some(CONTAINER_TYPE_SANDBOX)
}

/// The image name, where CRI is the one that wrote it: not on a pod sandbox, whose
/// `image-name` annotation only a pod's own annotations could have set.
pub fn trusted_image_name(annotations: &HashMap<String, String>) -> Option<&str> {
    if is_cri_sandbox(annotations) {
        return None;
    }
    get(annotations, ANNOTATION_IMAGE_NAME)
}

impl PodIdentity {
    pub fn from_annotations(container_id: &str, annotations: &HashMap<String, String>) -> Self {
        let owned = |k: &str| get(annotations, k).map(str::to_string);
        let container_type = get(annotations, ANNOTATION_CONTAINER_TYPE);
        let sandbox_id = get(annotations, ANNOTATION_SANDBOX_ID);
        let is_sandbox = match (container_type, sandbox_id) {
            (Some(CONTAINER_TYPE_SANDBOX), _) => true,
            (_, Some(id)) => id == container_id,
            (_, None) => true,
        };
        PodIdentity {
            sandbox_id: match sandbox_id {
                Some(id) if !is_sandbox => id.to_string(),
                _ => container_id.to_string(),
            },
            is_sandbox,
            namespace: owned(ANNOTATION_SANDBOX_NAMESPACE),
            pod_name: owned(ANNOTATION_SANDBOX_NAME),
            container_name: owned(ANNOTATION_CONTAINER_NAME)
                .filter(|_| !is_cri_sandbox(annotations)),
            image: trusted_image_name(annotations).map(str::to_string),
        }
    }
}

/// What the shim knows of the sandbox an app container names: a container it runs (from
/// its own Create), in which containerd namespace, and whether it was created as a pod
/// sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownSandbox {
    pub namespace: String,
    pub is_sandbox: bool,
}

/// The `unknown-sandbox` rule: an app container may join only a sandbox Stockade
/// started, as a sandbox, in the containerd namespace of the request. `known` is the
/// shim's record of `pod.sandbox_id` (None: it runs no such container).
pub fn check_sandbox(
    pod: &PodIdentity,
    namespace: &str,
    known: Option<&KnownSandbox>,
) -> Result<(), Refusal> {
    if pod.is_sandbox {
        return Ok(());
    }
    let refuse = |why: String| {
        Err(Refusal {
            rule: Rule::UnknownSandbox,
            reason: format!(
                "the container names sandbox {} (annotation {ANNOTATION_SANDBOX_ID}), {why}",
                crate::quote::quoted(&pod.sandbox_id)
            ),
        })
    };
    match known {
        None => refuse(format!(
            "which Stockade did not start in containerd namespace {namespace:?}"
        )),
        Some(k) if k.namespace != namespace => refuse(format!(
            "which Stockade started in containerd namespace {:?}, not {namespace:?}",
            k.namespace
        )),
        Some(k) if !k.is_sandbox => refuse("which is an app container, not a pod sandbox".into()),
        Some(_) => Ok(()),
    }
}

#[cfg(test)]
#[path = "pod_tests.rs"]
mod tests;
