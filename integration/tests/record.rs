//! Record mode end to end, for three workloads (a busybox shell script, busybox httpd
//! serving a request, a static C program that forks and execs): each runs once under
//! profiles/record.toml while `stockade profile record` collects its SECCOMP_RET_LOG
//! records; the generated profile (checked against the default with `stockade profile
//! diff`) is then given as the container's own seccomp profile under profiles/default.toml:
//! the workload runs as before, and one syscall it never made (`sync`) is denied, which
//! the exporter counts.

mod common;

use std::process::Output;
use stockade_integration::exporter::Exporter;
use stockade_integration::paths;
use stockade_integration::record::{install_record_image, Recorder, RECORD_IMAGE};
use stockade_integration::runtimes::TestRuntime;
use stockade_integration::Containerd;

/// The two tests run one at a time: their containerds have separate node states, so
/// both hand out the same host ID range, and a recorder (which reads every record on the
/// node) could not tell their containers apart. One node state per node has no such twin.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

struct Workload {
    name: &'static str,
    cmd: Vec<String>,
    /// The same workload, then the probe syscall `sync` (never made while recording).
    probe: Vec<String>,
    /// What its output must contain.
    expect: &'static [&'static str],
}

/// busybox's shell runs its applets in-process: the script also execs /bin/busybox
/// for real, and tries `hostname` (denied by the default filter, recording or not).
const SCRIPT: &str = "echo start; for i in 1 2 3; do echo line$i >> /tmp/f; done; \
    /bin/busybox cat /tmp/f; hostname rec 2>/dev/null || echo hostname refused; \
    echo script done";
/// busybox httpd in inetd mode (`-i`): one HTTP request on stdin, the response on stdout
/// (a ctr container's network namespace has no interface up).
const HTTPD: &str =
    "printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | httpd -i -h /www; echo httpd done";

fn workloads() -> Vec<Workload> {
    let sh = |script: &str| vec!["sh".to_string(), "-c".to_string(), script.to_string()];
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        Workload {
            name: "script",
            cmd: sh(SCRIPT),
            probe: sh(&format!("{SCRIPT}; sync; echo probed")),
            expect: &["line3", "hostname refused", "script done"],
        },
        Workload {
            name: "httpd",
            cmd: sh(HTTPD),
            probe: sh(&format!("{HTTPD}; sync; echo probed")),
            expect: &["200 OK", "recorded page", "httpd done"],
        },
        Workload {
            name: "forker",
            cmd: args(&["/forker", "3"]),
            probe: args(&["/forker", "3", "sync"]),
            expect: &["parent read: child 2", "forker done"],
        },
    ]
}

fn ctr_run(c: &Containerd, rt: &TestRuntime, flags: &[&str], id: &str, cmd: &[String]) -> Output {
    let rt_args = rt.ctr_run_args();
    let mut args: Vec<&str> = vec!["run", "--rm"];
    args.extend_from_slice(flags);
    args.extend(rt_args.iter().map(String::as_str));
    args.push(RECORD_IMAGE);
    args.push(id);
    args.extend(cmd.iter().map(String::as_str));
    c.ctr(&args)
}

fn stdout_of(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what}: {}; stdout: {stdout}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn recorded_profiles_run_their_workloads_and_deny_the_rest() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = common::start();
    install_record_image(&c).expect("building the record image");
    let record = TestRuntime::stockade_record().expect("profiles/record.toml");
    let default = TestRuntime::stockade().expect("profiles/default.toml");
    let exporter = Exporter::start(&c);
    let stockade = paths::shim_dir().unwrap().join("stockade");
    let tag = std::process::id();

    for w in workloads() {
        // 1. Record.
        let out_dir = c.dir.join(format!("recorded-{}", w.name));
        let recorder = Recorder::start(&c, &out_dir).expect("starting the recorder");
        let id = format!("rec-{}-{tag}", w.name);
        let out = ctr_run(&c, &record, &[], &id, &w.cmd);
        let stdout = stdout_of(&out, &format!("{} in record mode", w.name));
        for want in w.expect {
            assert!(stdout.contains(want), "{}: {want:?} in {stdout}", w.name);
        }
        let recorded = recorder.finish().expect("the recording");
        println!("---- {} recorded ----\n{}", w.name, recorded.stdout);
        let completeness = &recorded.summary["completeness"];
        assert_eq!(
            completeness["complete"], true,
            "{}: {completeness}\n{}",
            w.name, recorded.stderr
        );
        let entry = recorded
            .container(&id)
            .unwrap_or_else(|| panic!("{}: no recording of {id}: {}", w.name, recorded.summary));
        let syscalls: Vec<&str> = entry["syscalls"]["x86_64"]
            .as_array()
            .expect("x86_64 syscalls")
            .iter()
            .filter_map(|s| s.as_str())
            .collect();
        assert!(syscalls.contains(&"execve"), "{}: {syscalls:?}", w.name);
        assert!(
            !syscalls.contains(&"sync"),
            "{}: the probe must be new",
            w.name
        );
        let allows = entry["profile_allows"].as_u64().unwrap();
        let default_allows = entry["default_allows"].as_u64().unwrap();
        println!(
            "{}: {} syscalls recorded, profile allows {allows} of the default's {default_allows}",
            w.name,
            syscalls.len()
        );
        assert!(allows < default_allows / 2, "{}: {entry}", w.name);
        if w.name == "script" {
            // The default's denials hold in record mode.
            let denied = entry["denied"].as_array().unwrap();
            assert!(
                denied.iter().any(|d| d == "sethostname"),
                "{}: {entry}",
                w.name
            );
        }
        let profile = entry["profile"]
            .as_str()
            .expect("a profile file")
            .to_string();

        // 2. How it narrows the default.
        let diff = std::process::Command::new(&stockade)
            .args(["profile", "diff", "--profile"])
            .arg(default.profile.as_ref().unwrap())
            .arg(&profile)
            .output()
            .unwrap();
        let diff = stdout_of(&diff, "stockade profile diff");
        println!("{diff}");
        assert!(diff.contains(&format!(": {allows} allowed")), "{diff}");

        // 3. Enforce: the workload runs as recorded under its own profile.
        let seccomp = ["--seccomp", "--seccomp-profile", profile.as_str()];
        let id = format!("enf-{}-{tag}", w.name);
        let out = ctr_run(&c, &default, &seccomp, &id, &w.cmd);
        let stdout = stdout_of(&out, &format!("{} under its recorded profile", w.name));
        for want in w.expect {
            assert!(stdout.contains(want), "{}: {want:?} in {stdout}", w.name);
        }

        // 4. A syscall it never made is denied, and counted.
        let id = format!("probe-{}-{tag}", w.name);
        let out = ctr_run(&c, &default, &seccomp, &id, &w.probe);
        let stdout = String::from_utf8_lossy(&out.stdout);
        if w.name == "forker" {
            assert!(stdout.contains("sync: -1 (errno 1)"), "{stdout}");
        }
        let denied = exporter.wait_for(
            "stockade_seccomp_denials_total",
            &[&format!("container=\"{id}\""), "syscall=\"sync\""],
            1.0,
        );
        assert!(
            denied >= 1.0,
            "{}: no sync denial counted for {id} ({stdout}):\n{}",
            w.name,
            exporter.diagnosis()
        );
        println!("{}: probe `sync` denied, counted {denied}", w.name);
    }
}

/// Every call is recorded, not a sample: 200 children that each fork and exec give
/// thousands of records, all of them counted for the container and none lost.
#[test]
fn a_recording_sees_every_call() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = common::start();
    install_record_image(&c).expect("building the record image");
    let record = TestRuntime::stockade_record().expect("profiles/record.toml");
    let recorder = Recorder::start(&c, &c.dir.join("recorded")).expect("starting the recorder");
    let id = format!("rec-many-{}", std::process::id());
    let out = ctr_run(&c, &record, &[], &id, &["/forker".into(), "200".into()]);
    stdout_of(&out, "forker 200 in record mode");
    let recorded = recorder.finish().expect("the recording");
    let entry = recorded.container(&id).expect("a recording");
    println!("{}", recorded.summary);
    assert_eq!(recorded.summary["completeness"]["complete"], true);
    let records = entry["records"].as_u64().unwrap();
    // A child is about 28 calls (clone, dup2, close, execve, static busybox start-up and
    // exit): 20 each is a floor a sampled or rate-limited recording would not reach.
    assert!(records >= 200 * 20, "only {records} records: {entry}");
}

/// Through CRI: one pod of two containers (the script and httpd) recorded under the
/// `stockade-record` handler gets one profile per container, each with its own calls
/// (only httpd asks for its peer's address), and both run under handler `stockade` with
/// their profile as `seccompProfile: Localhost`.
#[test]
fn cri_pod_containers_get_their_own_profiles() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let c = common::start();
    let cri = c.cri().unwrap();
    let record = TestRuntime::stockade_record().expect("profiles/record.toml");
    let default = TestRuntime::stockade().expect("profiles/default.toml");
    let httpd = "mkdir -p /tmp/www && echo recorded page > /tmp/www/index.html && \
        printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | httpd -i -h /tmp/www; echo httpd done";
    // Each init stays a second after its work: a recorder behind on a busy node attributes
    // a process by its cgroup only while it lives, and a container whose every process is
    // gone by then would have no recording of its own at all.
    let (script, httpd) = (format!("{SCRIPT}; sleep 1"), format!("{httpd}; sleep 1"));
    let workloads = [
        ("script", script.as_str(), "script done"),
        ("httpd", httpd.as_str(), "httpd done"),
    ];
    // Runs both containers in a pod of `rt` and waits until each exited 0.
    let run_pod = |rt: &TestRuntime, name: &str, profiles: Option<&[String; 2]>| {
        let pod_cfg = cri.pod_config(name);
        let pod = cri.run_pod_sandbox(&pod_cfg, rt.cri_handler).unwrap();
        let mut ids = Vec::new();
        for (i, (container, script, _)) in workloads.iter().enumerate() {
            let mut cfg = common::app_config(&cri, rt, container, &["sh", "-c", script]);
            if let Some(profiles) = profiles {
                let sc = cfg.linux.as_mut().and_then(|l| l.security_context.as_mut());
                sc.unwrap().seccomp = Some(k8s_cri::v1::SecurityProfile {
                    profile_type: k8s_cri::v1::security_profile::ProfileType::Localhost as i32,
                    localhost_ref: profiles[i].clone(),
                });
            }
            ids.push(cri.run_container(&pod, &cfg, &pod_cfg).unwrap());
        }
        for (id, (container, _, done)) in ids.iter().zip(&workloads) {
            stockade_integration::exec::wait_for("the container to exit", common::WAIT, || {
                let status = cri.container_status(id).ok()?.status?;
                (status.state == k8s_cri::v1::ContainerState::ContainerExited as i32).then_some(())
            })
            .unwrap();
            let status = cri.container_status(id).unwrap().status.unwrap();
            let logs = cri.container_logs(id).unwrap_or_default();
            assert_eq!(status.exit_code, 0, "{container} in {name}: {logs}");
            assert!(logs.contains(done), "{container} in {name}: {logs}");
        }
        cri.stop_pod_sandbox(&pod).unwrap();
        cri.remove_pod_sandbox(&pod).unwrap();
    };

    let recorder = Recorder::start(&c, &c.dir.join("recorded-pod")).expect("the recorder");
    run_pod(&record, "recpod", None);
    let recorded = recorder.finish().expect("the recording");
    println!("---- pod recorded ----\n{}", recorded.stdout);
    // Nothing lost. A pod's short-lived children (a subshell that exits within
    // microseconds) may be gone before their records are read: those the recording
    // names as unattributed, with their syscalls, instead of guessing a container.
    let completeness = &recorded.summary["completeness"];
    assert_eq!(completeness["kernel_lost"], 0, "{completeness}");
    assert_eq!(completeness["socket_overruns"], 0, "{completeness}");
    if completeness["complete"] != true {
        let unattributed = &recorded.summary["unattributed_syscalls"];
        assert!(
            unattributed["stockade-it/recpod"].is_array(),
            "{}",
            recorded.summary
        );
        println!("incomplete, as it says: {completeness}");
    }
    let calls = |container: &str| -> Vec<String> {
        let entry = recorded
            .container(container)
            .unwrap_or_else(|| panic!("no recording of {container}: {}", recorded.summary));
        assert_eq!(entry["pod"], "recpod", "{entry}");
        entry["syscalls"]["x86_64"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap_or_default().to_string())
            .collect()
    };
    let (script_calls, httpd_calls) = (calls("script"), calls("httpd"));
    // httpd's getpeername is its own, or (from a child gone before its records were
    // read) the pod's, which every container's profile of the pod then allows too.
    let added = &recorded.container("httpd").unwrap()["added_from_pod"];
    assert!(
        httpd_calls.iter().any(|s| s == "getpeername")
            || added
                .as_array()
                .is_some_and(|a| a.iter().any(|s| s == "getpeername")),
        "{httpd_calls:?}, added from the pod: {added}"
    );
    // Never attributed to the wrong container.
    assert!(
        !script_calls.iter().any(|s| s == "getpeername"),
        "{script_calls:?}"
    );
    let profiles = ["script", "httpd"].map(|name| {
        recorded.container(name).unwrap()["profile"]
            .as_str()
            .unwrap()
            .to_string()
    });
    run_pod(&default, "enfpod", Some(&profiles));
}
