use super::*;
use proptest::prelude::*;

/// Every CRI annotation key a pod might try to forge, and a few others.
const KEYS: [&str; 12] = [
    ANNOTATION_CONTAINER_TYPE,
    ANNOTATION_SANDBOX_ID,
    ANNOTATION_SANDBOX_NAME,
    ANNOTATION_SANDBOX_NAMESPACE,
    ANNOTATION_CONTAINER_NAME,
    ANNOTATION_IMAGE_NAME,
    "io.kubernetes.cri.sandbox-uid",
    "io.kubernetes.cri.sandbox-log-directory",
    "io.kubernetes.cri.podsandbox.image-name",
    "io.kubernetes.cri.untrusted-workload",
    "io.katacontainers.config.hypervisor.path",
    "example.com/anything",
];

/// What containerd's CRI plugin (1.6 `containerSpec`/`sandboxContainerSpec`, 2.x
/// `DefaultCRIAnnotations`) writes: the passed-through pod annotations first, then its
/// own over them.
fn cri_spec_annotations(
    passthrough: &HashMap<String, String>,
    sandbox: bool,
) -> HashMap<String, String> {
    let mut a = passthrough.clone();
    let mut set = |k: &str, v: &str| {
        a.insert(k.to_string(), v.to_string());
    };
    set(ANNOTATION_SANDBOX_ID, "sandbox-of-pod");
    set(ANNOTATION_SANDBOX_NAMESPACE, "team");
    set("io.kubernetes.cri.sandbox-uid", "uid-1");
    set(ANNOTATION_SANDBOX_NAME, "web");
    if sandbox {
        set("io.kubernetes.cri.sandbox-log-directory", "/var/log/pods/x");
        set(
            "io.kubernetes.cri.podsandbox.image-name",
            "registry.k8s.io/pause:3.10",
        );
        set(ANNOTATION_CONTAINER_TYPE, "sandbox");
    } else {
        set(ANNOTATION_CONTAINER_NAME, "app");
        set(ANNOTATION_IMAGE_NAME, "registry.k8s.io/app:1");
        set(ANNOTATION_CONTAINER_TYPE, "container");
    }
    a
}

fn forged() -> impl Strategy<Value = HashMap<String, String>> {
    proptest::collection::hash_map(
        proptest::sample::select(KEYS.to_vec()).prop_map(str::to_string),
        prop_oneof![
            Just(String::new()),
            Just("sandbox".to_string()),
            Just("container".to_string()),
            Just("victim-pod".to_string()),
            Just("evil.example.com/x:1".to_string()),
            "[a-z0-9-]{1,12}",
        ],
        0..8,
    )
}

proptest! {
    /// No annotation a pod passes through (containerd's pod_annotations or
    /// container_annotations, any pattern) changes who the container is: its pod (hence
    /// its ID range, keyed by the sandbox id), its role, its names, its image.
    #[test]
    fn pod_supplied_annotations_change_no_identity(passthrough in forged(), sandbox: bool) {
        let id = if sandbox { "sandbox-of-pod" } else { "app-container" };
        let clean = PodIdentity::from_annotations(id, &cri_spec_annotations(&HashMap::new(), sandbox));
        let attacked = PodIdentity::from_annotations(id, &cri_spec_annotations(&passthrough, sandbox));
        prop_assert_eq!(&attacked, &clean);
        prop_assert_eq!(clean.sandbox_id.as_str(), "sandbox-of-pod");
        prop_assert_eq!(clean.is_sandbox, sandbox);
    }
}

#[test]
fn a_sandbox_ignores_the_names_only_a_pod_could_have_written() {
    let mut passthrough = HashMap::new();
    passthrough.insert(
        ANNOTATION_IMAGE_NAME.to_string(),
        "evil.example.com/x".into(),
    );
    passthrough.insert(
        ANNOTATION_CONTAINER_NAME.to_string(),
        "kube-apiserver".into(),
    );
    let a = cri_spec_annotations(&passthrough, true);
    let pod = PodIdentity::from_annotations("sandbox-of-pod", &a);
    assert_eq!((pod.container_name, pod.image), (None, None));
    assert_eq!(trusted_image_name(&a), None);
    let app = cri_spec_annotations(&passthrough, false);
    assert_eq!(trusted_image_name(&app), Some("registry.k8s.io/app:1"));
}

#[test]
fn a_container_without_cri_annotations_is_its_own_pod() {
    let pod = PodIdentity::from_annotations("c1", &HashMap::new());
    assert!(pod.is_sandbox && pod.sandbox_id == "c1");
    assert!(!is_cri_sandbox(&HashMap::new()));
}

fn app_of(sandbox: &str) -> PodIdentity {
    let mut a = HashMap::new();
    a.insert(ANNOTATION_CONTAINER_TYPE.to_string(), "container".into());
    a.insert(ANNOTATION_SANDBOX_ID.to_string(), sandbox.into());
    PodIdentity::from_annotations("app", &a)
}

#[test]
fn only_a_sandbox_stockade_started_in_the_same_namespace_may_be_joined() {
    let known = |namespace: &str, is_sandbox| KnownSandbox {
        namespace: namespace.into(),
        is_sandbox,
    };
    let pod = app_of("victim");
    assert!(check_sandbox(&pod, "k8s.io", Some(&known("k8s.io", true))).is_ok());
    let cases = [
        (
            None,
            "which Stockade did not start in containerd namespace \"k8s.io\"",
        ),
        (
            Some(known("default", true)),
            "started in containerd namespace \"default\", not \"k8s.io\"",
        ),
        (
            Some(known("k8s.io", false)),
            "an app container, not a pod sandbox",
        ),
    ];
    for (k, why) in cases {
        let e = check_sandbox(&pod, "k8s.io", k.as_ref()).unwrap_err();
        assert_eq!(e.rule, Rule::UnknownSandbox);
        let msg = e.to_string();
        assert!(msg.contains("rule `unknown-sandbox`"), "{msg}");
        assert!(msg.contains("sandbox \"victim\""), "{msg}");
        assert!(msg.contains(why), "{msg}");
    }
    // A sandbox (or a container of its own) joins nothing.
    let own = PodIdentity::from_annotations("solo", &HashMap::new());
    assert!(check_sandbox(&own, "k8s.io", None).is_ok());
}
