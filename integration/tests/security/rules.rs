//! Probes of what an outside attack run got through (issue 15): host IDs reused at once,
//! host devices and device rules in an Update, pod annotations, root in the container,
//! and the calls only the strict profile denies. Each row runs under runc too.

use super::{label, Res, Results, Spec};
use containerd_shim_protos::api::UpdateTaskRequest;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::ttrpc;
use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};
use std::collections::HashMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::time::Duration;
use stockade_integration::cgroups::process_cgroups;
use stockade_integration::hardening::{parse_status, profile_cap_allowlist};
use stockade_integration::paths;
use stockade_integration::probes::{
    self, describe, parse_probe_lines, Outcome, EVIL_IMAGE, PROBE_IMAGE, PROBE_USER_IMAGE,
};
use stockade_integration::runtimes::TestRuntime;
use stockade_integration::{Containerd, Cri};
use stockade_runtime::pod::{
    ANNOTATION_CONTAINER_NAME, ANNOTATION_CONTAINER_TYPE, ANNOTATION_IMAGE_NAME,
    ANNOTATION_SANDBOX_ID, ANNOTATION_SANDBOX_NAME, ANNOTATION_SANDBOX_NAMESPACE,
};

/// The strict-profile syscall probes: (probe line, row).
const STRICT_SYSCALLS: [(&str, &str); 3] = [
    ("name-to-handle-at", "name-to-handle-at (strict)"),
    ("fileless-exec", "fileless-exec (strict)"),
    ("seccomp-listener", "seccomp-listener (strict)"),
];

pub(super) fn specs() -> Vec<Spec> {
    let nr = |n: libc::c_long| -> i64 { n };
    let row = |name, runc_allows, guard, rule, strict, syscall| Spec {
        name,
        runc_allows,
        guard,
        syscall,
        strict,
        rule,
        runc_note: None,
    };
    vec![
        row(
            "id-range-reuse",
            true,
            "userns: a released ID range is reused last (rotation with quarantine)",
            None,
            false,
            None,
        ),
        row(
            "host-device",
            true,
            "policy rule `host-devices`",
            Some("host-devices"),
            false,
            None,
        ),
        Spec {
            runc_note: Some("runc update ignores device rules"),
            ..row(
                "update-device-rule",
                false,
                "policy rule `host-devices` (an Update may not change device rules)",
                Some("host-devices"),
                false,
                None,
            )
        },
        Spec {
            runc_note: Some("runc reads no CRI annotations"),
            ..row(
                "pod-annotations",
                false,
                "pod identity only from annotations CRI writes last (pod, ID range, profile, audit)",
                None,
                false,
                None,
            )
        },
        row(
            "disk-fill",
            true,
            "ephemeral storage: a project quota on the writable layer; on a filesystem without \
             project quotas, rule `ephemeral-storage` (storage.unsupported = \"refuse\")",
            None,
            false,
            None,
        ),
        row(
            "run-as-root (strict)",
            true,
            "policy rule `run-as-root` (pod sandbox exempt)",
            Some("run-as-root"),
            true,
            None,
        ),
        row(
            "name-to-handle-at (strict)",
            true,
            "seccomp (strict.json)",
            None,
            true,
            Some((nr(libc::SYS_name_to_handle_at), [0; 6])),
        ),
        row(
            "fileless-exec (strict)",
            true,
            "seccomp (strict.json: memfd_create without MFD_NOEXEC_SEAL, execveat with AT_EMPTY_PATH)",
            None,
            true,
            Some((nr(libc::SYS_memfd_create), [0, 1, 0, 0, 0, 0])),
        ),
        row(
            "seccomp-listener (strict)",
            true,
            "seccomp (strict.json: SECCOMP_FILTER_FLAG_NEW_LISTENER)",
            None,
            true,
            Some((nr(libc::SYS_seccomp), [1, 8, 0, 0, 0, 0])),
        ),
    ]
}

/// The audit trail the test profiles write, from where this run began.
pub(super) struct Audit {
    from: u64,
}

impl Audit {
    pub(super) fn start() -> Audit {
        let from = std::fs::metadata(paths::test_audit_log()).map_or(0, |m| m.len());
        Audit { from }
    }

    fn lines(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read(paths::test_audit_log()).unwrap_or_default();
        let new = text.get(self.from as usize..).unwrap_or_default();
        String::from_utf8_lossy(new)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Lines about container `id` (exec lines excluded).
    fn of(&self, id: &str) -> Vec<serde_json::Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["container_id"] == id)
            .collect()
    }

    /// The default profile records a root container (`ctr run` of the probe image, which
    /// runs as root) as a `run-as-root` finding; None when it does.
    pub(super) fn missing_root_finding(&self, id: &str) -> Option<String> {
        let lines = self.of(id);
        let found = lines.iter().any(|l| {
            l["event"] == "hardened"
                && l["findings"]
                    .as_array()
                    .is_some_and(|f| f.iter().any(|f| f["rule"] == "run-as-root"))
        });
        (!found).then(|| {
            format!(
                "run-as-root: the default profile recorded no finding for root container {id}: {lines:?}"
            )
        })
    }
}

/// Every probe of this module under `rt` (its strict rows under Stockade's strict
/// profile when `rt` is Stockade).
pub(super) fn probes(c: &Containerd, rt: &TestRuntime, audit: &Audit, r: &mut Results) {
    let strict = if rt.hardened() {
        TestRuntime::stockade_strict().expect("profiles/strict.toml")
    } else {
        rt.clone()
    };
    r.insert("id-range-reuse".into(), id_range_reuse(c, rt));
    r.insert("host-device".into(), host_device(c, rt));
    r.insert("update-device-rule".into(), update_device_rule(c, rt));
    r.insert("disk-fill".into(), disk_fill(c, rt));
    let cri = match c.cri() {
        Ok(cri) => Some(cri),
        Err(e) => {
            for n in ["pod-annotations", "run-as-root (strict)"] {
                r.insert(n.into(), Res::error(format!("{e:#}")));
            }
            None
        }
    };
    if let Some(cri) = &cri {
        r.insert("pod-annotations".into(), pod_annotations(cri, rt, audit));
        r.insert("run-as-root (strict)".into(), run_as_root(cri, &strict));
    }
    let id = format!("{}-strict", label(rt));
    let args = probes::ctr_run_image_args(
        &strict,
        PROBE_USER_IMAGE,
        &["--rm"],
        &id,
        &["/probe", "strict"],
    );
    let out = c.ctr(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let lines = parse_probe_lines(&String::from_utf8_lossy(&out.stdout));
    for (probe, row) in STRICT_SYSCALLS {
        let res = match lines.iter().find(|l| l.name == probe) {
            Some(l) => Res::of(l.outcome, format!("as UID 1000: {}", l.detail)),
            None => Res::error(format!("probe strict: no result; {}", describe(&out))),
        };
        r.insert(row.into(), res);
    }
}

/// 32 MiB written to /tmp (the writable layer) under a 16 MiB bound: runc has none;
/// Stockade sets a project quota where the filesystem has project quotas, and here (the
/// suite's containerd root has none) refuses the container under a copy of the profile
/// with `storage.unsupported = "refuse"` (the shipped "unbounded" runs it, with a finding;
/// integration/tests/ephemeral_storage.rs measures the quota itself).
fn disk_fill(c: &Containerd, rt: &TestRuntime) -> Res {
    let rt = match &rt.profile {
        Some(profile) => {
            let text = std::fs::read_to_string(profile).unwrap_or_default();
            let variant = c.dir.join("storage-refuse.toml");
            let changed = text.replace("unsupported = \"unbounded\"", "unsupported = \"refuse\"");
            if changed == text || std::fs::write(&variant, changed).is_err() {
                return Res::error(format!("no storage.unsupported in {}", profile.display()));
            }
            TestRuntime {
                profile: Some(variant),
                ..rt.clone()
            }
        }
        None => rt.clone(),
    };
    let id = format!("{}-disk-fill", label(&rt));
    let bound = format!(
        "{}=16Mi",
        stockade_runtime::hardener::storage::ANNOTATION_BYTES
    );
    let script = "dd if=/dev/zero of=/tmp/fill bs=1M count=32 2>&1 && echo wrote";
    let args = probes::ctr_run_image_args(
        &rt,
        stockade_integration::image::BUSYBOX_IMAGE,
        &["--rm", "--annotation", &bound],
        &id,
        &["sh", "-c", script],
    );
    let out = c.ctr(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let _ = c.ctr(&["containers", "rm", &id]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.success() && stdout.contains("wrote") {
        Res::of(Outcome::Allowed, "wrote 32 MiB past a 16 MiB bound")
    } else if stdout.contains("quota exceeded") || stdout.contains("No space left") {
        Res::of(Outcome::Blocked, "dd stopped at the 16 MiB project quota")
    } else if stderr.contains("ephemeral-storage") {
        refused(&out)
    } else {
        Res::error(describe(&out))
    }
}

/// The last line of a failed command's stderr: the runtime's refusal, for ctr.
fn refused(out: &std::process::Output) -> Res {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let why = stderr.lines().last().unwrap_or("").trim();
    Res::of(Outcome::Blocked, format!("runtime refused it: {why}"))
}

/// A pod is deleted and the next one starts: does it run as the deleted pod's host IDs
/// (which would give it whatever the first pod left owned by them: processes, files on a
/// filesystem that cannot be idmapped)? The first pod notes its host root in a shared
/// directory below the test profiles' one writable hostPath (rule `host-path`); volumes
/// are idmapped, so the note itself is owned as under runc.
fn id_range_reuse(c: &Containerd, rt: &TestRuntime) -> Res {
    let l = label(rt);
    let shared = paths::test_volumes_dir().join(format!(
        "{l}-shared-{}",
        c.dir.file_name().unwrap_or_default().to_string_lossy()
    ));
    let made = std::fs::create_dir_all(&shared)
        .and_then(|()| std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)));
    if let Err(e) = made {
        return Res::error(format!("{}: {e}", shared.display()));
    }
    let mount = format!(
        "type=bind,src={},dst=/shared,options=rbind:rw",
        shared.display()
    );
    let run = |id: &str, script: &str| {
        probes::run_probe(c, rt, &["--mount", &mount], id, &["sh", "-c", script])
    };
    let first = run(
        &format!("{l}-ida"),
        "awk '{print $2; exit}' /proc/self/uid_map > /shared/first-root",
    );
    let result = match std::fs::read_to_string(shared.join("first-root")) {
        Err(e) => Res::error(format!(
            "the first pod left no note ({e}): {}",
            describe(&first)
        )),
        Ok(_) => {
            let second = run(
                &format!("{l}-idb"),
                "first=$(cat /shared/first-root); root=$(awk '{print $2; exit}' /proc/self/uid_map); \
                 if [ \"$first\" = \"$root\" ]; \
                 then echo \"PROBE id-range-reuse ALLOWED the next pod runs as the deleted pod's host root $root\"; \
                 else echo \"PROBE id-range-reuse BLOCKED the next pod runs as host root $root, the deleted pod ran as $first\"; fi",
            );
            match parse_probe_lines(&String::from_utf8_lossy(&second.stdout)).first() {
                Some(line) => Res::of(line.outcome, line.detail.clone()),
                None => Res::error(describe(&second)),
            }
        }
    };
    let _ = std::fs::remove_dir_all(&shared);
    result
}

/// A host block device for the device probes: path, major, minor. Disks first, then
/// zram and loop devices; the first one this (root) process may open for reading (a VM's
/// sandbox can forbid its own disk). Nothing is read on the host.
fn host_disk() -> Option<(PathBuf, u32, u32)> {
    let mut names: Vec<String> = std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("ram"))
        .collect();
    let rank = |n: &str| ["zram", "loop"].iter().position(|p| n.starts_with(p));
    names.sort_by_key(|n| (rank(n), n.clone()));
    names.into_iter().find_map(|name| {
        let dev = std::fs::read_to_string(format!("/sys/block/{name}/dev")).ok()?;
        let (major, minor) = dev.trim().split_once(':')?;
        let path = PathBuf::from(format!("/dev/{name}"));
        std::fs::File::open(&path).ok()?;
        Some((path, major.parse().ok()?, minor.parse().ok()?))
    })
}

/// `ctr run --device DISK`: the probe opens the host's block device and reads from it.
fn host_device(c: &Containerd, rt: &TestRuntime) -> Res {
    let Some((disk, ..)) = host_disk() else {
        return Res::error("no block device in /sys/block");
    };
    let disk = disk.display().to_string();
    let id = format!("{}-dev", label(rt));
    let out = probes::run_probe(
        c,
        rt,
        &["--device", &disk],
        &id,
        &["/probe", "device", &disk],
    );
    match parse_probe_lines(&String::from_utf8_lossy(&out.stdout)).first() {
        Some(l) => Res::of(l.outcome, l.detail.clone()),
        None if !out.status.success() => {
            let _ = c.ctr(&["containers", "rm", &id]);
            refused(&out)
        }
        None => Res::error(describe(&out)),
    }
}

/// Task.Update on the shim's own socket, as containerd 1.6 sends it (task API v2, which
/// both runc's shim and Stockade serve; no ctr of 1.6 or 2.x sends an Update):
/// `resources` is the JSON of an OCI LinuxResources.
fn task_update(c: &Containerd, id: &str, resources: &serde_json::Value) -> Result<(), String> {
    let bundle = c
        .state
        .join("io.containerd.runtime.v2.task")
        .join(c.namespace())
        .join(id);
    let address = std::fs::read_to_string(bundle.join("address"))
        .map_err(|e| format!("{}: {e}", bundle.join("address").display()))?;
    let client = ttrpc::Client::connect(address.trim()).map_err(|e| format!("{e:?}"))?;
    let update = UpdateTaskRequest {
        id: id.to_string(),
        resources: Some(Any {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources".into(),
            value: resources.to_string().into_bytes(),
            ..Default::default()
        })
        .into(),
        ..Default::default()
    };
    let mut req = ttrpc::Request::new();
    req.set_service("containerd.task.v2.Task".into());
    req.set_method("Update".into());
    req.set_timeout_nano(Duration::from_secs(30).as_nanos() as i64);
    req.payload = update.write_to_bytes().map_err(|e| e.to_string())?;
    match client.request(req) {
        Ok(_) => Ok(()),
        Err(ttrpc::Error::RpcStatus(status)) => Err(status.message),
        Err(e) => Err(format!("{e:?}")),
    }
}

/// Task.Update with a device rule opening a host block device; the device cgroup is read
/// from the host afterwards (v1; on v2 only the update's answer counts).
fn update_device_rule(c: &Containerd, rt: &TestRuntime) -> Res {
    let Some((_, major, minor)) = host_disk() else {
        return Res::error("no block device in /sys/block");
    };
    let id = format!("{}-upd", label(rt));
    let args = probes::ctr_run_args(rt, &["-d"], &id, &["sleep", "600"]);
    if let Err(e) = c.ctr_ok(&args.iter().map(String::as_str).collect::<Vec<_>>()) {
        return Res::error(format!("{e:#}"));
    }
    let result = (|| -> anyhow::Result<Res> {
        c.wait_task_status(&id, "RUNNING")?;
        let (pid, _) = c.task(&id)?;
        let rule = serde_json::json!({"devices": [
            {"allow": true, "type": "b", "major": major, "minor": minor, "access": "rwm"}
        ]});
        let answer = task_update(c, &id, &rule);
        let wanted = format!("b {major}:{minor} rwm");
        let list = process_cgroups(pid)?
            .devices
            .map(|d| std::fs::read_to_string(d.join("devices.list")).unwrap_or_default());
        Ok(match (list, answer) {
            (Some(list), _) if list.lines().any(|l| l == wanted) => Res::of(
                Outcome::Allowed,
                format!("the device cgroup now allows {wanted} (a host block device)"),
            ),
            (_, Err(why)) => Res::of(Outcome::Blocked, format!("update refused: {why}")),
            (Some(_), Ok(())) => Res::of(
                Outcome::Blocked,
                format!("update accepted, the device cgroup still does not allow {wanted}"),
            ),
            (None, Ok(())) => Res::of(Outcome::Unobserved, "cgroup v2: update accepted"),
        })
    })();
    let _ = c.ctr(&["tasks", "kill", "-s", "SIGKILL", &id]);
    let _ = c.wait_task_status(&id, "STOPPED");
    let _ = c.ctr(&["tasks", "rm", &id]);
    let _ = c.ctr(&["containers", "rm", &id]);
    result.unwrap_or_else(|e| Res::error(format!("{e:#}")))
}

fn remove_pod(cri: &Cri, pod: &str) {
    let _ = cri.stop_pod_sandbox(pod);
    let _ = cri.remove_pod_sandbox(pod);
}

/// A refused CRI call: the part from the rule on.
fn cri_refusal(e: &anyhow::Error) -> Res {
    let msg = format!("{e:#}");
    match msg.find("refused by stockade policy rule") {
        Some(i) => Res::of(Outcome::Blocked, msg[i..].to_string()),
        None => Res::error(msg),
    }
}

/// The annotations a pod passes through containerd (`pod_annotations = ["*"]` in the
/// test config) to claim another pod's identity, image and names.
fn forged(victim: &str) -> HashMap<String, String> {
    [
        (ANNOTATION_SANDBOX_ID, victim),
        (ANNOTATION_CONTAINER_TYPE, "container"),
        (ANNOTATION_SANDBOX_NAME, "victim"),
        (ANNOTATION_SANDBOX_NAMESPACE, "kube-system"),
        (ANNOTATION_CONTAINER_NAME, "kube-apiserver"),
        (ANNOTATION_IMAGE_NAME, EVIL_IMAGE),
        ("io.kubernetes.cri.sandbox-uid", "victim-uid"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn userns_and_root(pid: i32) -> anyhow::Result<(u64, String)> {
    let ino = std::fs::metadata(format!("/proc/{pid}/ns/user"))?.ino();
    let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map"))?;
    let root = map.split_whitespace().nth(1).unwrap_or("?").to_string();
    Ok((ino, root))
}

/// A pod whose own annotations name another pod's sandbox, a foreign image and names:
/// its containers must stay in their own pod (user namespace, ID range), get their own
/// profile, and be audited under their own identity.
fn pod_annotations(cri: &Cri, rt: &TestRuntime, audit: &Audit) -> Res {
    let victim_cfg = cri.pod_config("victim");
    let victim = match cri.run_pod_sandbox(&victim_cfg, rt.cri_handler) {
        Ok(p) => p,
        Err(e) => return Res::error(format!("victim pod: {e:#}")),
    };
    let mut forger_cfg: PodSandboxConfig = cri.pod_config("forger");
    forger_cfg.annotations = forged(&victim);
    let result = (|| -> anyhow::Result<Res> {
        let forger = match cri.run_pod_sandbox(&forger_cfg, rt.cri_handler) {
            Ok(p) => p,
            Err(e) => {
                return Ok(Res::of(
                    Outcome::Allowed,
                    format!("the pod's annotations decided its sandbox's fate: {e:#}"),
                ))
            }
        };
        let mut app: ContainerConfig = cri.container_config("app", &["sleep", "600"]);
        app.annotations = forged(&victim);
        let checked = match cri.run_container(&forger, &app, &forger_cfg) {
            Err(e) => Ok(Res::of(
                Outcome::Allowed,
                format!("the pod's annotations decided its container's fate: {e:#}"),
            )),
            Ok(id) if !rt.hardened() => {
                let _ = id;
                Ok(Res::of(
                    Outcome::Unobserved,
                    "runc reads none of these annotations (and all pods share the host's IDs)",
                ))
            }
            Ok(id) => check_identity(cri, rt, audit, &victim, &forger, &id),
        };
        remove_pod(cri, &forger);
        checked
    })();
    remove_pod(cri, &victim);
    result.unwrap_or_else(|e| Res::error(format!("{e:#}")))
}

fn check_identity(
    cri: &Cri,
    rt: &TestRuntime,
    audit: &Audit,
    victim: &str,
    forger: &str,
    app: &str,
) -> anyhow::Result<Res> {
    let (victim_ns, victim_root) = userns_and_root(cri.pod_pid(victim)?)?;
    let (own_ns, own_root) = userns_and_root(cri.pod_pid(forger)?)?;
    let app_pid = cri.container_pid(app)?;
    let (app_ns, app_root) = userns_and_root(app_pid)?;
    let mut wrong = Vec::new();
    if app_ns != own_ns || app_ns == victim_ns {
        wrong.push(format!(
            "user namespace {app_ns} (own pod's {own_ns}, victim's {victim_ns})"
        ));
    }
    if app_root != own_root || app_root == victim_root {
        wrong.push(format!(
            "host root {app_root} (own pod's {own_root}, victim's {victim_root})"
        ));
    }
    let status = parse_status(&std::fs::read_to_string(format!("/proc/{app_pid}/status"))?)?;
    let profile = rt.profile.as_ref().expect("a Stockade profile");
    if status.cap_eff != profile_cap_allowlist(profile)? {
        wrong.push(format!(
            "CapEff {:016x} is not its profile's",
            status.cap_eff
        ));
    }
    for (id, role) in [(forger, "sandbox"), (app, "app")] {
        for line in audit.of(id) {
            let claims = [
                (&line["sandbox_id"], serde_json::json!(forger)),
                (&line["namespace"], serde_json::json!("stockade-it")),
                (&line["pod"], serde_json::json!("forger")),
            ];
            for (got, want) in claims {
                if *got != want {
                    wrong.push(format!("{role} audited as {got} (want {want})"));
                }
            }
            if line["image"] == EVIL_IMAGE || line["container"] == "kube-apiserver" {
                wrong.push(format!(
                    "{role} audited with image {} container {}",
                    line["image"], line["container"]
                ));
            }
        }
    }
    Ok(if wrong.is_empty() {
        Res::of(
            Outcome::Blocked,
            format!(
                "7 forged annotations changed nothing: own user namespace and host root {own_root} \
                 (victim's {victim_root}), own profile, audited as its own pod"
            ),
        )
    } else {
        Res::of(Outcome::Allowed, wrong.join("; "))
    })
}

/// A root app container through CRI; the sandbox (pause, root) must start.
fn run_as_root(cri: &Cri, rt: &TestRuntime) -> Res {
    let pod_cfg = cri.pod_config("root");
    let pod = match cri.run_pod_sandbox(&pod_cfg, rt.cri_handler) {
        Ok(p) => p,
        Err(e) => return Res::error(format!("the pod sandbox must be exempt: {e:#}")),
    };
    let mut cfg = cri.container_config("app", &["sleep", "600"]);
    if let Some(image) = cfg.image.as_mut() {
        image.image = PROBE_IMAGE.to_string();
    }
    let res = match cri.run_container(&pod, &cfg, &pod_cfg) {
        Err(e) => {
            let res = cri_refusal(&e);
            // The error must say whose user it is and how to change it.
            let named = res.text.contains(&format!("image {PROBE_IMAGE:?}"))
                && res.text.contains("runAsUser");
            if named || res.outcome.is_none() {
                res
            } else {
                Res::error(format!(
                    "refusal names neither the image nor runAsUser: {}",
                    res.text
                ))
            }
        }
        Ok(id) => match cri.exec_sync(&id, &["/probe", "whoami"]) {
            Ok(out) => match parse_probe_lines(&out.stdout).first() {
                Some(l) => Res::of(l.outcome, l.detail.clone()),
                None => Res::error(format!("whoami: {}", out.stdout)),
            },
            Err(e) => Res::error(format!("{e:#}")),
        },
    };
    remove_pod(cri, &pod);
    res
}
