//! A pod's kubelet volumes under runc and under Stockade, in the same run: runAsUser 1000,
//! fsGroup 2000 (a supplemental group), a secret with defaultMode 0400 (0440 root:2000 after
//! kubelet's fsGroup pass), a projected token 0600 owned by 1000, an emptyDir and an fsGroup
//! volume on a real ext4 filesystem, laid out as kubelet lays them out under a kubelet root
//! of the test's. The same reads, writes and on-disk owners are expected under both (the
//! table is printed); Stockade seals the secret volumes (nosuid, nodev, noexec) on top.
//!
//! Runs against whichever containerd the harness starts (Debian's 1.6 by default).

mod common;

use k8s_cri::v1::{Int64Value, Mount};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use stockade_integration::kubelet_layout::{KubeletPod, PROJECTED, SECRET};
use stockade_integration::paths;
use stockade_integration::runtimes::TestRuntime;
use stockade_integration::{Containerd, Cri};

const RUN_AS_USER: i64 = 1000;
const FS_GROUP: u32 = 2000;
const TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// One check: what it is, the command run inside (sh -c), and an on-disk path whose owner
/// is recorded afterwards.
struct Check {
    what: &'static str,
    script: String,
    on_disk: Option<PathBuf>,
}

fn check(what: &'static str, script: impl Into<String>, on_disk: Option<PathBuf>) -> Check {
    Check {
        what,
        script: script.into(),
        on_disk,
    }
}

/// What a check gave: the exit code and output inside, and the owner on disk.
fn outcome(cri: &Cri, id: &str, check: &Check) -> String {
    let r = cri.exec_sync(id, &["sh", "-c", &check.script]).unwrap();
    let mut text = format!(
        "exit {}: {}",
        r.exit_code,
        format!("{}{}", r.stdout, r.stderr)
            .trim()
            .replace('\n', " / ")
    );
    if let Some(path) = &check.on_disk {
        let owner = std::fs::metadata(path)
            .map(|m| format!("{}:{}", m.uid(), m.gid()))
            .unwrap_or_else(|e| format!("missing ({e})"));
        text.push_str(&format!("; on disk {owner}"));
    }
    text
}

/// The pod's volumes laid out, the pod and its container run under `rt`, every check's
/// outcome; the pod is removed.
fn run_scenario(c: &Containerd, cri: &Cri, rt: &TestRuntime) -> Vec<(&'static str, String)> {
    let mut pod_cfg = cri.pod_config(&format!("kvol-{}", rt.label));
    let uid = pod_cfg.metadata.as_ref().unwrap().uid.clone();
    let mut kubelet = KubeletPod::new(&paths::test_kubelet_root(), &uid).unwrap();
    let creds = kubelet
        .atomic_volume(
            SECRET,
            "creds",
            FS_GROUP,
            &[("password", "hunter2\n", 0o440, 0, FS_GROUP)],
        )
        .unwrap();
    let token = kubelet
        .atomic_volume(
            PROJECTED,
            "kube-api-access-x",
            FS_GROUP,
            &[("token", "eyJhbGciOi.token\n", 0o600, 1000, 0)],
        )
        .unwrap();
    let scratch = kubelet.empty_dir("scratch", FS_GROUP).unwrap();
    let data = kubelet
        .ext4_volume("pv-data", FS_GROUP, 16, &[("shared.txt", "first line\n")])
        .unwrap();
    let hosts = kubelet.etc_hosts("kvol").unwrap();
    if let Some(sc) = pod_cfg
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
    {
        sc.supplemental_groups = vec![i64::from(FS_GROUP)];
    }
    let pod = cri.run_pod_sandbox(&pod_cfg, rt.cri_handler).unwrap();
    let mut cfg = cri.container_config("app", &["sleep", "600"]);
    let mount = |container: &str, host: &Path, readonly: bool| Mount {
        container_path: container.into(),
        host_path: host.display().to_string(),
        readonly,
        ..Default::default()
    };
    cfg.mounts = vec![
        mount("/etc/creds", &creds, true),
        mount(TOKEN_DIR, &token, true),
        mount("/scratch", &scratch, false),
        mount("/data", &data, false),
        mount("/etc/hosts", &hosts, false),
    ];
    if let Some(sc) = cfg.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
        sc.run_as_user = Some(Int64Value { value: RUN_AS_USER });
        sc.supplemental_groups = vec![i64::from(FS_GROUP)];
    }
    let id = cri.run_container(&pod, &cfg, &pod_cfg).unwrap();

    let stat = "stat -L -c '%u:%g %a'";
    let checks = [
        check("identity (id -u; id -G)", "id -u; id -G", None),
        check("read secret, defaultMode 0400 + fsGroup", format!("cat /etc/creds/password && {stat} /etc/creds/password"), None),
        check("read projected token 0600 uid 1000", format!("cat {TOKEN_DIR}/token && {stat} {TOKEN_DIR}/token"), None),
        check("write into the secret volume", "echo x > /etc/creds/new", None),
        check("write a file in the emptyDir", format!("echo hi > /scratch/new && {stat} /scratch/new"), Some(scratch.join("new"))),
        check("ext4 volume: its root", format!("{stat} /data"), Some(data.clone())),
        check("ext4 volume: write a file", format!("echo hi > /data/new && {stat} /data/new"), Some(data.join("new"))),
        check("ext4 volume: append to a 0664 root:2000 file", "echo more >> /data/shared.txt && cat /data/shared.txt", Some(data.join("shared.txt"))),
        check("ext4 volume: mkdir (setgid parent)", format!("mkdir /data/dir && {stat} /data/dir"), Some(data.join("dir"))),
        check("chown a file to another user", "chown 1001 /scratch/new", Some(scratch.join("new"))),
        check("kubelet's /etc/hosts", "tail -1 /etc/hosts", None),
        check("secret volume mount options", "grep ' /etc/creds ' /proc/mounts | cut -d' ' -f4 | tr , '\\n' | grep -E '^(ro|nosuid|nodev|noexec)$' | sort | tr '\\n' ,", None),
    ];
    let results = checks
        .iter()
        .map(|check| (check.what, outcome(cri, &id, check)))
        .collect();
    cri.stop_container(&id, 5).unwrap();
    cri.remove_container(&id).unwrap();
    cri.stop_pod_sandbox(&pod).unwrap();
    cri.remove_pod_sandbox(&pod).unwrap();
    let pod_dir = kubelet.dir.clone();
    drop(kubelet);
    assert!(!pod_dir.exists(), "kubelet layout left behind");
    assert_eq!(KubeletPod::loop_devices(&pod_dir), Vec::<String>::new());
    let _ = c;
    results
}

#[test]
fn kubelet_volumes_read_write_and_own_as_under_runc() {
    let c = common::start();
    let cri = c.cri().unwrap();
    let version = cri.version().unwrap().runtime_version;
    let runc = run_scenario(&c, &cri, &TestRuntime::runc());
    let stockade = run_scenario(&c, &cri, &TestRuntime::stockade().unwrap());

    let width = runc.iter().map(|(w, _)| w.len()).max().unwrap_or(0);
    println!("\nkubelet volumes, containerd {version}: runAsUser 1000, fsGroup 2000");
    println!("| {:width$} | runc | stockade |", "check");
    println!("|{}|---|---|", "-".repeat(width + 2));
    for ((what, r), (_, s)) in runc.iter().zip(&stockade) {
        println!("| {what:width$} | {r} | {s} |");
    }
    let sealed = "exit 0: nodev,noexec,nosuid,ro,";
    for ((what, r), (_, s)) in runc.iter().zip(&stockade) {
        if *what == "secret volume mount options" {
            assert_eq!(s, sealed, "Stockade seals secret volumes");
            continue;
        }
        assert_eq!(r, s, "{what}: runc and Stockade differ");
    }
    // The table says what it should, not only that both agree.
    let row = |what: &str| &runc.iter().find(|(w, _)| *w == what).unwrap().1;
    assert_eq!(row("identity (id -u; id -G)"), "exit 0: 1000 / 0 2000");
    assert_eq!(
        row("read secret, defaultMode 0400 + fsGroup"),
        "exit 0: hunter2 / 0:2000 440"
    );
    assert_eq!(
        row("read projected token 0600 uid 1000"),
        "exit 0: eyJhbGciOi.token / 1000:0 600"
    );
    assert!(row("write into the secret volume").contains("Read-only file system"));
    assert_eq!(
        row("ext4 volume: write a file"),
        "exit 0: 1000:2000 644; on disk 1000:2000"
    );
    assert!(row("chown a file to another user").starts_with("exit 1"));
    let left = c.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
}
