//! libcgroups' cgroup v1 manager as patched in third_party/libcgroups (it reads the mount
//! table and /proc/self/cgroup once per manager instead of twice per controller): on a v1 or
//! hybrid host, a manager still finds every mounted controller, comounted ones included, and
//! a process it adds lands in each. The expected controllers come from this file's own
//! reading of /proc/self/mountinfo. Run as root; on a pure cgroup v2 host (the VM) there is
//! no v1 manager to test, and the tests say so.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use libcgroups::common::CgroupManager;
use libcgroups::v1::manager::Manager;
use nix::unistd::Pid;

/// The controllers libcgroups' v1 manager knows (libcgroups::v1::CONTROLLERS, by name).
const KNOWN: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "hugetlb",
    "memory",
    "pids",
    "perf_event",
    "blkio",
    "net_prio",
    "net_cls",
    "freezer",
];

/// Says that a test did not run here, and why: written to stderr itself, which libtest's
/// output capture (of `eprintln!`) does not hold back.
fn skipped(why: &str) {
    let line = format!("!!! SKIPPED (v1_manager): {why}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

/// Known controller -> the mount point of its v1 hierarchy, from /proc/self/mountinfo
/// (fields after " - ": fs type, source, super options; the options name the controllers).
fn mounted_controllers() -> BTreeMap<String, PathBuf> {
    let table = fs::read_to_string("/proc/self/mountinfo").expect("read /proc/self/mountinfo");
    let mut found = BTreeMap::new();
    for line in table.lines() {
        let Some((before, after)) = line.split_once(" - ") else {
            continue;
        };
        let mut tail = after.split(' ');
        if tail.next() != Some("cgroup") {
            continue;
        }
        let options = tail.nth(1).unwrap_or_default();
        let mount_point = before.split(' ').nth(4).expect("mount point field");
        for option in options.split(',') {
            if KNOWN.contains(&option) {
                found
                    .entry(option.to_owned())
                    .or_insert_with(|| PathBuf::from(mount_point));
            }
        }
    }
    found
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

/// The test's cgroup `<parent>/ctr` in every v1 hierarchy, and a child process to move;
/// on drop the child is killed and both directories go, in every hierarchy.
struct Scene {
    parent: String,
    mounts: BTreeMap<String, PathBuf>,
    child: Child,
}

impl Scene {
    fn new(mounts: BTreeMap<String, PathBuf>) -> Scene {
        let child = Command::new("/bin/sleep")
            .arg("600")
            .spawn()
            .expect("spawn sleep");
        Scene {
            parent: format!("stockade-test-{}-v1manager", std::process::id()),
            mounts,
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
        for mount_point in self.mounts.values() {
            let parent = mount_point.join(&self.parent);
            let _ = fs::remove_dir(parent.join("ctr"));
            let _ = fs::remove_dir(&parent);
        }
    }
}

fn v1_host() -> Option<BTreeMap<String, PathBuf>> {
    let mounts = mounted_controllers();
    if mounts.is_empty() {
        skipped("no cgroup v1 hierarchy is mounted on this host (pure cgroup v2)");
        return None;
    }
    Some(mounts)
}

#[test]
fn a_process_added_by_the_v1_manager_lands_in_every_mounted_controller() {
    let Some(mounts) = v1_host() else { return };
    let scene = Scene::new(mounts.clone());
    let pid = scene.child.id();

    let manager = Manager::new(&scene.relative_path()).expect("v1 manager");
    manager
        .add_task(Pid::from_raw(pid as i32))
        .expect("add the child to every controller (cpuset's cpus and mems filled in)");

    let expected = format!("/{}", scene.relative_path().display());
    let now = cgroups_of(pid);
    for controller in mounts.keys() {
        let (_, path) = now
            .iter()
            .find(|(controllers, _)| controllers.contains(controller))
            .unwrap_or_else(|| panic!("/proc/{pid}/cgroup has no line for {controller}"));
        assert_eq!(path, &expected, "the child's {controller} cgroup");
    }
    for (controller, mount_point) in &mounts {
        let dir = mount_point.join(scene.relative_path());
        assert!(dir.is_dir(), "{controller}: {} was not made", dir.display());
    }
    assert_eq!(
        manager.get_all_pids().expect("pids of the cgroup"),
        vec![Pid::from_raw(pid as i32)],
        "the manager's cgroup holds the child alone"
    );
}

#[test]
fn a_v1_manager_of_the_empty_path_is_the_callers_own_cgroup() {
    if v1_host().is_none() {
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
