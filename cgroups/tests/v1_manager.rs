//! libcgroups' v1 manager as patched in third_party/libcgroups (it reads the mount table and
//! /proc/self/cgroup once per manager instead of twice per controller; a single-threaded
//! process adding itself is moved through `tasks`): on a v1 or hybrid host, a manager
//! still finds every hierarchy it manages, comounted ones included, and a process it adds
//! lands in each, with all of its threads. The expected hierarchies come from
//! stockade-cgroups' own detection (`Host::v1_hierarchies`, its own reading of the mount
//! table). Run as root; on a pure cgroup v2 host (the VM) there is no v1 manager to test,
//! and the tests say so.

use std::fs;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
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
    cgroups_in(&format!("/proc/{pid}/cgroup"))
}

/// As [`cgroups_of`], from one cgroup file (a process's, or one of its threads').
fn cgroups_in(file: &str) -> Vec<(Vec<String>, String)> {
    let text = fs::read_to_string(file).unwrap_or_else(|e| panic!("read {file}: {e}"));
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
    /// `test`: the test's own name, so that tests running at once keep apart.
    fn new(test: &str, hierarchies: &[V1Hierarchy]) -> Scene {
        let child = Command::new("/bin/sleep")
            .arg("600")
            .spawn()
            .expect("spawn sleep");
        Scene {
            parent: format!("stockade-test-{}-v1manager-{test}", std::process::id()),
            mount_points: hierarchies.iter().map(|h| h.mount_point.clone()).collect(),
            child,
        }
    }

    fn relative_path(&self) -> PathBuf {
        Path::new(&self.parent).join("ctr")
    }

    /// The test's parent directory in every hierarchy (what drop removes).
    fn parent_dirs(&self) -> Vec<PathBuf> {
        self.mount_points
            .iter()
            .map(|m| m.join(&self.parent))
            .collect()
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
    let scene = Scene::new("pid", &hierarchies);
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

/// A forked child of the test that has its v1 manager add the child itself (with
/// `threads` threads, the extra ones parked), then waits to be looked at.
struct SelfAdder {
    pid: nix::unistd::Pid,
    /// Closed on drop: the child exits when it reads EOF here.
    _release: OwnedFd,
}

impl SelfAdder {
    /// Forks; returns once the child has added itself. Err: what the child's add_task said.
    fn fork(manager: &Manager, threads: usize) -> Result<SelfAdder, String> {
        let (report_r, report_w) = nix::unistd::pipe().expect("pipe");
        let (release_r, release_w) = nix::unistd::pipe().expect("pipe");
        // SAFETY: the child only spawns threads, calls add_task, writes a pipe and exits
        // with _exit; glibc's malloc is usable in the child of a multi-threaded fork.
        match unsafe { nix::unistd::fork() }.expect("fork") {
            nix::unistd::ForkResult::Child => {
                drop(report_r);
                drop(release_w);
                let release = fs::File::from(release_r);
                for _ in 1..threads {
                    let parked = release.try_clone().expect("dup");
                    std::thread::spawn(move || {
                        let _ = (&parked).read(&mut [0u8; 1]);
                    });
                }
                // Every thread is up before the move (the kernel's count, as the patch reads it).
                while thread_count("self") != threads {
                    std::thread::yield_now();
                }
                let message = match manager.add_task(nix::unistd::getpid()) {
                    Ok(()) => "ok".to_string(),
                    Err(e) => format!("add_task: {e}"),
                };
                let mut report = fs::File::from(report_w);
                let _ = report.write_all(message.as_bytes());
                drop(report);
                let _ = (&release).read(&mut [0u8; 1]);
                // SAFETY: ends the forked child without running the test's exit handlers.
                unsafe { libc::_exit(0) }
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(report_w);
                drop(release_r);
                let adder = SelfAdder {
                    pid: child,
                    _release: release_w,
                };
                let mut message = String::new();
                fs::File::from(report_r)
                    .read_to_string(&mut message)
                    .expect("read the child's report");
                if message == "ok" {
                    Ok(adder)
                } else {
                    Err(message)
                }
            }
        }
    }
}

impl Drop for SelfAdder {
    fn drop(&mut self) {
        // Its release pipe closes after this: it exits by itself; kill in case it hangs.
        let _ = nix::sys::signal::kill(self.pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

fn thread_count(pid: &str) -> usize {
    fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Every thread of `pid` is in `expected` in every hierarchy.
fn assert_all_threads_in(pid: nix::unistd::Pid, hierarchies: &[V1Hierarchy], expected: &str) {
    let tasks: Vec<String> = fs::read_dir(format!("/proc/{pid}/task"))
        .expect("list the child's threads")
        .map(|e| {
            e.expect("thread entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    for tid in &tasks {
        let now = cgroups_in(&format!("/proc/{pid}/task/{tid}/cgroup"));
        for h in hierarchies {
            let (_, path) = now
                .iter()
                .find(|(controllers, _)| same_set(controllers, &h.controllers))
                .unwrap_or_else(|| panic!("thread {tid} has no line for {:?}", h.controllers));
            assert_eq!(
                path,
                expected,
                "thread {tid} of {pid} ({} threads), {:?} cgroup",
                tasks.len(),
                h.controllers
            );
        }
    }
}

/// A child that added itself to the cgroup of `manager` and `scene`. Fields drop in
/// order: the child is gone before its scene removes the cgroup.
struct SelfAdded {
    adder: SelfAdder,
    manager: Manager,
    scene: Scene,
}

impl SelfAdded {
    /// Ends the scene and checks that it left no cgroup behind.
    fn end(self) {
        let dirs = self.scene.parent_dirs();
        drop(self);
        let left: Vec<_> = dirs.iter().filter(|d| d.exists()).collect();
        assert!(left.is_empty(), "cgroups left behind: {left:?}");
    }
}

/// Forks a child with `threads` threads that adds itself to a fresh cgroup `name` and
/// checks that every thread landed there; None where the host has no v1 controllers.
fn self_added(name: &str, threads: usize) -> Option<SelfAdded> {
    let hierarchies = managed_hierarchies()?;
    let scene = Scene::new(name, &hierarchies);
    let manager = Manager::new(&scene.relative_path()).expect("v1 manager");
    let adder = SelfAdder::fork(&manager, threads).expect("the child adds itself");
    assert_eq!(thread_count(&adder.pid.to_string()), threads);
    let expected = format!("/{}", scene.relative_path().display());
    assert_all_threads_in(adder.pid, &hierarchies, &expected);
    Some(SelfAdded {
        adder,
        manager,
        scene,
    })
}

/// The patched move: a single-threaded process adding itself (as libcontainer's
/// intermediate process does) lands in every controller.
#[test]
fn a_single_threaded_process_adding_itself_lands_in_every_controller() {
    let Some(added) = self_added("self", 1) else {
        return;
    };
    assert_eq!(
        added.manager.get_all_pids().expect("pids of the cgroup"),
        vec![added.adder.pid],
        "the manager's cgroup holds the child alone"
    );
    added.end();
}

/// A process with more threads adding itself is moved whole (`cgroup.procs`): moving only
/// the calling thread would leave the others behind.
#[test]
fn a_multi_threaded_process_adding_itself_moves_all_its_threads() {
    // The moves are checked by self_added.
    if let Some(added) = self_added("threads", 3) {
        added.end();
    }
}

/// The cgroup directories of the scene's parent and its `ctr`, in every hierarchy mounted
/// under the cgroup root (managed or not), as `<hierarchy>/PARENT[/ctr]`: the same for two
/// scenes that made the same directories.
fn made_under(scene: &Scene) -> Vec<PathBuf> {
    let root = Path::new("/sys/fs/cgroup");
    let mut out: Vec<PathBuf> = fs::read_dir(root)
        .expect("list the cgroup root")
        .flatten()
        .filter(|e| e.path().join(&scene.parent).is_dir())
        .flat_map(|e| {
            let generic = Path::new(&e.file_name()).join("PARENT");
            let ctr = e.path().join(&scene.parent).join("ctr").is_dir();
            std::iter::once(generic.clone()).chain(ctr.then(|| generic.join("ctr")))
        })
        .collect();
    out.sort();
    out
}

#[test]
fn directories_made_ahead_are_the_ones_the_v1_manager_makes_and_it_uses_them() {
    let Some(hierarchies) = managed_hierarchies() else {
        return;
    };
    let host = Host::detect().expect("detect the cgroup setup");
    // What libcgroups makes by itself.
    let by_libcgroups = Scene::new("ahead-ref", &hierarchies);
    Manager::new(&by_libcgroups.relative_path())
        .expect("v1 manager")
        .add_task(Pid::from_raw(by_libcgroups.child.id() as i32))
        .expect("add the reference child");
    let reference = made_under(&by_libcgroups);
    assert!(!reference.is_empty(), "libcgroups made no directory");

    // Made ahead, then used by the manager.
    let ahead = Scene::new("ahead", &hierarchies);
    let path = format!("/{}", ahead.relative_path().display());
    let made = host
        .make_v1_dirs(&path)
        .expect("make the directories ahead");
    assert_eq!(
        made.len(),
        hierarchies.len(),
        "one per managed hierarchy: {made:?}"
    );
    assert_eq!(
        made_under(&ahead),
        reference,
        "the same directories as libcgroups makes"
    );
    assert!(
        host.make_v1_dirs(&path).expect("again").is_empty(),
        "nothing to make a second time"
    );
    let pid = ahead.child.id();
    Manager::new(&ahead.relative_path())
        .expect("v1 manager")
        .add_task(Pid::from_raw(pid as i32))
        .expect("add the child to the directories made ahead (cpuset filled in)");
    for h in &hierarchies {
        let (_, at) = cgroups_of(pid)
            .into_iter()
            .find(|(controllers, _)| same_set(controllers, &h.controllers))
            .unwrap_or_else(|| panic!("/proc/{pid}/cgroup has no line for {:?}", h.controllers));
        assert_eq!(at, path, "the child's {:?} cgroup", h.controllers);
    }
    // A systemd path is left to systemd.
    assert!(host
        .make_v1_dirs("system.slice:stockade:ahead")
        .expect("systemd path")
        .is_empty());
}
