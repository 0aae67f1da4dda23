//! Which pod a container belongs to, read from the CRI annotations containerd sets.

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
}

impl PodIdentity {
    pub fn from_annotations(container_id: &str, annotations: &HashMap<String, String>) -> Self {
        let get = |k: &str| annotations.get(k).filter(|v| !v.is_empty()).cloned();
        let container_type = get(ANNOTATION_CONTAINER_TYPE);
        let sandbox_id = get(ANNOTATION_SANDBOX_ID);
        let is_sandbox = match (&container_type, &sandbox_id) {
            (Some(t), _) if t == "sandbox" => true,
            (_, Some(id)) => id == container_id,
            (_, None) => true,
        };
        PodIdentity {
            sandbox_id: if is_sandbox {
                container_id.to_string()
            } else {
                sandbox_id.unwrap_or_else(|| container_id.to_string())
            },
            is_sandbox,
            namespace: get(ANNOTATION_SANDBOX_NAMESPACE),
            pod_name: get(ANNOTATION_SANDBOX_NAME),
            container_name: get(ANNOTATION_CONTAINER_NAME),
        }
    }
}
