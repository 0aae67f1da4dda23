//! A web server on port 80 in a CRI pod, reached at the pod's IP from another pod: what
//! every Kubernetes workload expects, under runc and under Stockade.
//!
//! The pod's network namespace belongs to the host's user namespace, so Stockade's
//! container root could bind port 80 only once the shim set the pod's
//! `net.ipv4.ip_unprivileged_port_start` (containerd 2.x also puts that sysctl, and
//! `ping_group_range`, into every sandbox spec by default).

mod common;

use k8s_cri::v1::ContainerState;
use stockade_integration::exec::wait_for;
use stockade_integration::runtimes::TestRuntime;

const PAGE: &str = "hello from port 80";

fn web_server_on_port_80(rt: &TestRuntime) {
    let c = common::start();
    let cri = c.cri().unwrap();
    let server_cfg = cri.pod_config("web");
    let server_pod = cri.run_pod_sandbox(&server_cfg, rt.cri_handler).unwrap();
    // /tmp: an application user (strict refuses root) cannot write to /.
    let script = format!(
        "mkdir -p /tmp/www && echo '{PAGE}' > /tmp/www/index.html && exec httpd -f -vv -p 80 -h /tmp/www"
    );
    let cfg = common::app_config(&cri, rt, "httpd", &["sh", "-c", &script]);
    let server = cri.run_container(&server_pod, &cfg, &server_cfg).unwrap();
    let ip = cri
        .pod_sandbox_status(&server_pod)
        .unwrap()
        .status
        .and_then(|s| s.network)
        .map(|n| n.ip)
        .filter(|ip| !ip.is_empty())
        .expect("the pod has an IP");

    let client_cfg = cri.pod_config("client");
    let client_pod = cri.run_pod_sandbox(&client_cfg, rt.cri_handler).unwrap();
    let cfg = common::app_config(&cri, rt, "client", &["sleep", "600"]);
    let client = cri.run_container(&client_pod, &cfg, &client_cfg).unwrap();
    let url = format!("http://{ip}:80/");
    let page = wait_for("the page over the pod network", common::WAIT, || {
        let out = cri
            .exec_sync(&client, &["wget", "-q", "-O", "-", &url])
            .ok()?;
        (out.exit_code == 0).then_some(out.stdout)
    })
    .unwrap_or_else(|e| {
        let state = cri.container_state(&server).ok();
        let logs = cri.container_logs(&server).unwrap_or_default();
        panic!(
            "{} ({}): {e}; server {state:?}, logs: {logs}",
            url, rt.label
        )
    });
    assert_eq!(page.trim(), PAGE, "{}", rt.label);

    // The server is still up; exec and logs work on it; stop and remove end it.
    assert_eq!(
        cri.container_state(&server).unwrap(),
        ContainerState::ContainerRunning
    );
    let listening = cri
        .exec_sync(&server, &["cat", "/proc/net/tcp", "/proc/net/tcp6"])
        .unwrap()
        .ok()
        .unwrap();
    // Port 80 is 0050 in /proc/net/tcp{,6}, state 0A is LISTEN.
    assert!(
        listening
            .lines()
            .any(|l| l.contains(":0050 ") && l.contains(" 0A ")),
        "{}: {listening}",
        rt.label
    );
    let logs = wait_for("the request in the server's log", common::WAIT, || {
        cri.container_logs(&server)
            .ok()
            .filter(|l| l.contains("url:/"))
    })
    .unwrap();
    assert!(logs.contains("response:200"), "{logs}");
    for (pod, id) in [(&server_pod, &server), (&client_pod, &client)] {
        cri.stop_container(id, 5).unwrap();
        cri.remove_container(id).unwrap();
        cri.stop_pod_sandbox(pod).unwrap();
        cri.remove_pod_sandbox(pod).unwrap();
    }
    let left = c.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
}

#[test]
fn runc_web_server_on_port_80() {
    web_server_on_port_80(&TestRuntime::runc());
}

#[test]
fn stockade_web_server_on_port_80() {
    web_server_on_port_80(&TestRuntime::stockade().expect("profiles/default.toml"));
}

#[test]
fn stockade_strict_web_server_on_port_80() {
    web_server_on_port_80(&TestRuntime::stockade_strict().expect("profiles/strict.toml"));
}
