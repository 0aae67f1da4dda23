//! libcgroups' v1 manager as patched in third_party/libcgroups (it reads the mount table and
//! /proc/self/cgroup once per manager instead of twice per controller): on a v1 or hybrid
//! host, a manager still finds every hierarchy it manages, comounted ones included, and a
//! process it adds lands in each. The expected hierarchies come from stockade-cgroups' own
//! detection (`Host::v1_hierarchies`, its own reading of the mount table). Run as root; on a
//! pure cgroup v2 host (the VM) there is no v1 manager to test, and the tests say so.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use libcgroups::common::CgroupManager;
use libcgroups::v1::manager::Manager;
use nix::unistd::Pid;
use stockade_cgroups::{Host, V1Hierarchy};

/// Says that a test did not run here, and why: written to stderr itself, which libtest's
/// output capture (of `eprintln!`) does not hold back.
fn skipped(why: &str) {
    let line = format!("!!! SKIPPED (v1_manager): {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Hierarchy controllers (as /proc/<pid>/cgroup lists them) -> cgroup path, for `pid`.
fn cgroups_of(pid: u32) -> Vec<(Vec<String>, String)> {
    let text = fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("read /proc/<pid>/cgroup");
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?.split(',').map(str::to_owned).collect();
            Some((controllers, parts.next()?.to_owned()))
        })
        .collect()
}

fn same_set(a: &[String], b: &[String]) -> bool {
    a.len() == b.len() && a.iter().all(|x| b.contains(x))
}

/// The test's cgroup `<parent>/ctr` in every managed hierarchy, and a child process to
/// move; on drop the child is killed and both directories go, in every hierarchy.
struct Scene {
    parent: String,
    mount_points: Vec<PathBuf>,
    child: Child,
}

impl Scene {
    fn new(hierarchies: &[V1Hierarchy]) -> Scene {
        let child = Command::new("/bin/sleep")
            .arg("600")
            .spawn()
            .expect("spawn sleep");
        Scene {
            parent: format!("stockade-test-{}-v1manager", std::process::id()),
            mount_points: hierarchies.iter().map(|h| h.mount_point.clone()).collect(),
            child,
        }
    }

    fn relative_path(&self) -> PathBuf {
        Path::new(&self.parent).join("ctr")
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for mount_point in &self.mount_points {
            let parent = mount_point.join(&self.parent);
            let _ = fs::remove_dir(parent.join("ctr"));
            let _ = fs::remove_dir(&parent);
        }
    }
}

/// The v1 hierarchies libcgroups' manager adds tasks to, or None (said) on pure v2.
fn managed_hierarchies() -> Option<Vec<V1Hierarchy>> {
    let host = Host::detect().expect("detect the cgroup setup");
    let managed: Vec<V1Hierarchy> = host
        .v1_hierarchies()
        .iter()
        .filter(|h| h.managed)
        .cloned()
        .collect();
    if managed.is_empty() {
        skipped("no cgroup v1 hierarchy is mounted on this host (pure cgroup v2)");
        return None;
    }
    Some(managed)
}

#[test]
fn a_process_added_by_the_v1_manager_lands_in_every_mounted_controller() {
    let Some(hierarchies) = managed_hierarchies() else {
        return;
    };
    let scene = Scene::new(&hierarchies);
    let pid = scene.child.id();

    let manager = Manager::new(&scene.relative_path()).expect("v1 manager");
    manager
        .add_task(Pid::from_raw(pid as i32))
        .expect("add the child to every controller (cpuset's cpus and mems filled in)");

    let expected = format!("/{}", scene.relative_path().display());
    let now = cgroups_of(pid);
    for h in &hierarchies {
        let (_, path) = now
            .iter()
            .find(|(controllers, _)| same_set(controllers, &h.controllers))
            .unwrap_or_else(|| panic!("/proc/{pid}/cgroup has no line for {:?}", h.controllers));
        assert_eq!(path, &expected, "the child's {:?} cgroup", h.controllers);
        let dir = h.mount_point.join(scene.relative_path());
        assert!(
            dir.is_dir(),
            "{:?}: {} was not made",
            h.controllers,
            dir.display()
        );
    }
    assert_eq!(
        manager.get_all_pids().expect("pids of the cgroup"),
        vec![Pid::from_raw(pid as i32)],
        "the manager's cgroup holds the child alone"
    );
}

#[test]
fn a_v1_manager_of_the_empty_path_is_the_callers_own_cgroup() {
    if managed_hierarchies().is_none() {
        return;
    }
    let manager = Manager::new(Path::new("")).expect("v1 manager");
    let pids = manager
        .get_all_pids()
        .expect("pids of our own devices cgroup");
    let me = Pid::from_raw(std::process::id() as i32);
    assert!(
        pids.contains(&me),
        "the test process ({me}) is not among the {} pids of its own cgroup",
        pids.len()
    );
}
