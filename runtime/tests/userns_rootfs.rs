//! User-namespace fds and idmapped rootfs mounts, for real (root required).
//!
//! Every test works in its own temp dir; a guard unmounts whatever is left there before
//! the dir is removed, also when an assertion fails.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use stockade_runtime::idrange::IdRange;
use stockade_runtime::kernel;
use stockade_runtime::rootfs::{mount_rootfs, unmount_rootfs, RootfsError, RootfsMount};
use stockade_runtime::userns::userns_fd;

const RANGE: IdRange = IdRange {
    first: 200_000,
    size: 65_536,
};
const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n";

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, 0, "these tests need root");
}

/// Mount points at or below `dir`, from /proc/self/mountinfo.
fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.to_str().unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| m == dir || m.starts_with(&format!("{dir}/")))
        .collect()
}

/// Mount options (field 6) of the mount at `point`.
fn mount_options(point: &Path) -> String {
    let point = point.to_str().unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .map(|l| l.split(' ').collect::<Vec<_>>())
        .find(|f| f[4] == point)
        .map(|f| f[5].to_string())
        .unwrap_or_default()
}

/// The test's world: temp dir with layers, snapshot dirs, bundle.
struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        require_root();
        let dir = tempfile::Builder::new()
            .prefix("stockade-userns-")
            .tempdir()
            .unwrap();
        fs::create_dir(dir.path().join("bundle")).unwrap();
        World { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn target(&self) -> PathBuf {
        self.path("bundle/rootfs")
    }

    fn staging(&self) -> PathBuf {
        self.path("bundle/.stockade-rootfs")
    }

    /// A tiny image layer: etc/passwd, etc/hostname, bin/busybox, all owned by root.
    fn layer(&self, name: &str, hostname: &str) -> PathBuf {
        let layer = self.path(name);
        fs::create_dir_all(layer.join("etc")).unwrap();
        fs::create_dir_all(layer.join("bin")).unwrap();
        fs::write(layer.join("etc/passwd"), PASSWD).unwrap();
        fs::write(layer.join("etc/hostname"), hostname).unwrap();
        fs::copy("/bin/busybox", layer.join("bin/busybox")).unwrap();
        layer
    }

    /// Empty upper and work dirs, as containerd's overlayfs snapshotter makes them.
    fn snapshot(&self) -> (PathBuf, PathBuf) {
        let (upper, work) = (self.path("snap/fs"), self.path("snap/work"));
        fs::create_dir_all(&upper).unwrap();
        fs::create_dir_all(&work).unwrap();
        (upper, work)
    }

    fn overlay(&self, lowers: &[&Path], upper: &Path, work: &Path) -> Vec<RootfsMount> {
        let lowers: Vec<&str> = lowers.iter().map(|l| l.to_str().unwrap()).collect();
        vec![RootfsMount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options: vec![
                "index=off".into(),
                format!("workdir={}", work.display()),
                format!("upperdir={}", upper.display()),
                format!("lowerdir={}", lowers.join(":")),
            ],
        }]
    }

    fn assert_clean(&self) {
        assert_eq!(mounts_under(self.dir.path()), Vec::<String>::new());
        assert!(!self.staging().exists(), "staging dir left behind");
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = unmount_rootfs(&self.target(), &self.staging());
        for m in mounts_under(self.dir.path()).iter().rev() {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Run `script` with busybox sh as root of the container: chrooted into `root`, in the
/// user namespace `userns`, as UID/GID 0 there. Returns stdout; panics on failure.
fn run_in_container(root: &Path, userns: &OwnedFd, script: &str) -> String {
    let root = std::ffi::CString::new(root.to_str().unwrap()).unwrap();
    // "/" means: stay in the host's root (its /proc, its busybox).
    let chroot = root.as_bytes() != b"/";
    let ns: RawFd = userns.as_raw_fd();
    // Without /proc in the chroot busybox's shell does not find its applets by itself.
    let script = format!(
        "set -e; for a in cat id mkdir; do eval \"$a() {{ /bin/busybox $a \\\"\\$@\\\"; }}\"; done; {script}"
    );
    let mut cmd = Command::new("/bin/busybox");
    cmd.args(["sh", "-c", &script]);
    // SAFETY: the closure runs in the forked child before exec and only makes raw
    // syscalls (chroot, chdir, setns, setresgid, setgroups, setresuid) on data prepared
    // before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let check = |r: libc::c_int| {
                if r == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            };
            if chroot {
                check(libc::chroot(root.as_ptr()))?;
            }
            check(libc::chdir(c"/".as_ptr()))?;
            check(libc::setns(ns, libc::CLONE_NEWUSER))?;
            check(libc::setresgid(0, 0, 0))?;
            check(libc::setgroups(0, std::ptr::null()))?;
            check(libc::setresuid(0, 0, 0))?;
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{script}: {:?}\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn owner(path: &Path) -> (u32, u32) {
    let m = fs::symlink_metadata(path).unwrap();
    (m.uid(), m.gid())
}

#[test]
fn userns_fd_carries_the_mapping_and_leaves_no_helper_behind() {
    let _w = World::new();
    let ns = userns_fd(RANGE).unwrap();
    let maps = run_in_container(
        Path::new("/"),
        &ns,
        "cat /proc/self/uid_map /proc/self/gid_map; id -u",
    );
    let words: Vec<&str> = maps.split_whitespace().collect();
    assert_eq!(words, ["0", "200000", "65536", "0", "200000", "65536", "0"]);

    // The helper is a clone of this thread: same comm. None may be left as a zombie.
    for _ in 0..20 {
        drop(userns_fd(RANGE).unwrap());
    }
    let comm = fs::read_to_string("/proc/thread-self/comm").unwrap();
    let me = std::process::id().to_string();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let name = head.split_once('(').map(|(_, n)| n).unwrap_or("");
        assert!(
            !(fields[1] == me && name == comm.trim()),
            "helper {} left behind (state {})",
            entry.file_name().to_string_lossy(),
            fields[0]
        );
    }
}

#[test]
fn overlay_rootfs_container_root_writes_as_the_ranges_root() {
    let w = World::new();
    let lower = w.layer("layers/1", "from-image\n");
    let (upper, work) = w.snapshot();
    let ns = userns_fd(RANGE).unwrap();

    let mounted = mount_rootfs(
        &w.overlay(&[&lower], &upper, &work),
        &w.target(),
        &w.staging(),
        RANGE,
        ns.as_fd(),
    )
    .unwrap();
    assert_eq!(mounted.layers(), 1);
    // overlayfs holds its own clones of the idmapped layers: the attached ones are gone
    // from the mount table (one mount per rootfs, as under runc).
    assert_eq!(mounts_under(&w.staging()), Vec::<String>::new());
    assert!(!w.staging().exists(), "staging dir kept after the mount");
    assert!(
        !mount_options(&w.target()).is_empty(),
        "the overlay is mounted"
    );
    // The host sees image files through the idmap as the range's root.
    assert_eq!(owner(&w.target().join("etc/hostname")), (200_000, 200_000));
    assert_eq!(owner(&w.target()), (200_000, 200_000));

    let out = run_in_container(
        &w.target(),
        &ns,
        "id -u; echo 'app:x:1000:1000::/:/bin/sh' >> /etc/passwd && echo hello > /newfile \
         && mkdir /newdir && cat /etc/hostname",
    );
    assert_eq!(out, "0\nfrom-image\n");

    // The image layer is untouched and still root's.
    assert_eq!(
        fs::read_to_string(lower.join("etc/passwd")).unwrap(),
        PASSWD
    );
    for p in ["etc/passwd", "etc", "bin/busybox", ""] {
        assert_eq!(owner(&lower.join(p)), (0, 0), "{p}");
    }
    // What the container wrote lands in the upper dir under the unprivileged host IDs.
    let copied_up = fs::read_to_string(upper.join("etc/passwd")).unwrap();
    assert_eq!(copied_up, format!("{PASSWD}app:x:1000:1000::/:/bin/sh\n"));
    for p in ["", "etc", "etc/passwd", "newfile", "newdir"] {
        assert_eq!(owner(&upper.join(p)), (200_000, 200_000), "upper/{p}");
    }

    mounted.unmount().unwrap();
    w.assert_clean();
    assert!(w.target().is_dir(), "the bundle's rootfs dir is kept");
    assert_eq!(fs::read_dir(w.target()).unwrap().count(), 0);
}

#[test]
fn layers_keep_their_order_and_a_restarted_container_keeps_its_upper() {
    let w = World::new();
    let base = w.layer("layers/base", "base\n");
    let top = w.path("layers/top");
    fs::create_dir_all(top.join("etc")).unwrap();
    fs::write(top.join("etc/hostname"), "top\n").unwrap();
    let (upper, work) = w.snapshot();
    let mounts = w.overlay(&[&top, &base], &upper, &work);
    let ns = userns_fd(RANGE).unwrap();

    let m = mount_rootfs(&mounts, &w.target(), &w.staging(), RANGE, ns.as_fd()).unwrap();
    assert_eq!(m.layers(), 2);
    let out = run_in_container(&w.target(), &ns, "cat /etc/hostname; echo 1 > /state");
    assert_eq!(out, "top\n");
    m.unmount().unwrap();
    w.assert_clean();

    // Same snapshot again (container restart): upper is not empty now.
    let m = mount_rootfs(&mounts, &w.target(), &w.staging(), RANGE, ns.as_fd()).unwrap();
    let out = run_in_container(&w.target(), &ns, "cat /state; echo 2 >> /state");
    assert_eq!(out, "1\n");
    assert_eq!(owner(&upper.join("state")), (200_000, 200_000));
    // Unmounting from the paths alone, as a fresh process after a crash would.
    drop(m);
    unmount_rootfs(&w.target(), &w.staging()).unwrap();
    w.assert_clean();
    // Idempotent: nothing mounted is fine.
    unmount_rootfs(&w.target(), &w.staging()).unwrap();
}

/// 80 layers: past one page of mount(2) options with the staged layers' paths, so below
/// Linux 6.8 (no `lowerdir+`) they are passed by fd; above, one `lowerdir+` each.
#[test]
fn eighty_layers_mount_in_order_on_every_kernel() {
    let w = World::new();
    let base = w.layer("layers/base", "base\n");
    let mut layers = Vec::new();
    for i in 0..79 {
        let layer = w.path(&format!("layers/l{i}"));
        fs::create_dir_all(&layer).unwrap();
        fs::write(layer.join(format!("only-in-{i}")), format!("{i}\n")).unwrap();
        layers.push(layer);
    }
    let top = &layers[78];
    fs::create_dir_all(top.join("etc")).unwrap();
    fs::write(top.join("etc/hostname"), "top\n").unwrap();
    let mut lowers: Vec<&Path> = layers.iter().rev().map(PathBuf::as_path).collect();
    lowers.push(&base);
    let (upper, work) = w.snapshot();
    let mounts = w.overlay(&lowers, &upper, &work);
    let staged_options: usize = (0..80)
        .map(|i| w.staging().join(format!("lower-{i}")).as_os_str().len() + 1)
        .sum();
    assert!(
        staged_options > 4096,
        "the test needs more than a page: {staged_options}"
    );
    let ns = userns_fd(RANGE).unwrap();
    let m = mount_rootfs(&mounts, &w.target(), &w.staging(), RANGE, ns.as_fd()).unwrap();
    assert_eq!(m.layers(), 80);
    let out = run_in_container(&w.target(), &ns, "cat /etc/hostname /only-in-0 /only-in-78");
    assert_eq!(out, "top\n0\n78\n");
    m.unmount().unwrap();
    w.assert_clean();
}

/// tmpfs has idmapped mounts from Linux 6.3: below, Create says so instead of EINVAL.
#[test]
fn a_tmpfs_layer_is_refused_by_name_where_tmpfs_has_no_idmapped_mounts() {
    let w = World::new();
    let tmpfs = w.path("tmpfs");
    fs::create_dir(&tmpfs).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &tmpfs,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("size=16m"),
    )
    .unwrap();
    let lower = w.layer("tmpfs/layer", "tmpfs\n");
    let (upper, work) = w.snapshot();
    let mounts = w.overlay(&[&lower], &upper, &work);
    let ns = userns_fd(RANGE).unwrap();
    let facts = kernel::NodeFacts::probe(&[&tmpfs]).unwrap();
    let result = mount_rootfs(&mounts, &w.target(), &w.staging(), RANGE, ns.as_fd());
    match kernel::idmap_support(facts.kernel, "tmpfs") {
        kernel::IdmapSupport::Yes => result.unwrap().unmount().unwrap(),
        _ => {
            let err = result.unwrap_err();
            assert!(
                matches!(err, RootfsError::IdmapUnsupported { .. }),
                "{err:?}"
            );
            let msg = err.to_string();
            assert!(msg.contains("tmpfs") && msg.contains("6.3"), "{msg}");
            assert!(msg.contains(lower.to_str().unwrap()), "{msg}");
        }
    }
    nix::mount::umount2(&tmpfs, nix::mount::MntFlags::MNT_DETACH).unwrap();
    w.assert_clean();
}

#[test]
fn bind_rootfs_is_an_idmapped_bind() {
    let w = World::new();
    let layer = w.layer("native/snapshot", "native\n");
    let ns = userns_fd(RANGE).unwrap();
    let mounts = vec![RootfsMount {
        kind: "bind".into(),
        source: layer.to_str().unwrap().into(),
        options: vec!["rbind".into(), "ro".into()],
    }];
    let m = mount_rootfs(&mounts, &w.target(), &w.staging(), RANGE, ns.as_fd()).unwrap();
    assert_eq!(m.layers(), 0);
    assert!(mount_options(&w.target()).contains("idmapped"));
    assert_eq!(owner(&w.target().join("etc/passwd")), (200_000, 200_000));
    assert_eq!(owner(&layer.join("etc/passwd")), (0, 0));
    let out = run_in_container(&w.target(), &ns, "id -u; cat /etc/hostname");
    assert_eq!(out, "0\nnative\n");
    let err = fs::write(w.target().join("etc/new"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::EROFS));
    m.unmount().unwrap();
    w.assert_clean();
}

#[test]
fn bad_mounts_are_refused_and_leave_nothing_behind() {
    let w = World::new();
    let lower = w.layer("layers/1", "x\n");
    let (upper, work) = w.snapshot();
    let ns = userns_fd(RANGE).unwrap();
    let overlay = |options: Vec<String>| {
        vec![RootfsMount {
            kind: "overlay".into(),
            source: "overlay".into(),
            options,
        }]
    };
    let u = format!("upperdir={}", upper.display());
    let wk = format!("workdir={}", work.display());
    let l = format!("lowerdir={}", lower.display());
    let cases: Vec<(Vec<RootfsMount>, &str)> = vec![
        (vec![], "no rootfs mounts"),
        (overlay(vec![u.clone(), wk.clone()]), "no lowerdir"),
        (
            overlay(vec!["lowerdir=".into(), u.clone(), wk.clone()]),
            "empty",
        ),
        (
            overlay(vec![l.clone(), u.clone(), wk.clone(), "lowerdir=/x".into()]),
            "twice",
        ),
        (
            overlay(vec![l.clone(), u.clone(), wk.clone(), "bogus=1".into()]),
            "\"bogus=1\"",
        ),
        (overlay(vec![l.clone(), u.clone()]), "no workdir"),
        // Fails midway: layer 0 is cloned and staged before layer 1 turns out missing.
        (
            overlay(vec![
                format!("{l}:{}", w.path("missing").display()),
                u.clone(),
                wk.clone(),
            ]),
            "missing",
        ),
    ];
    for (mounts, expected) in cases {
        let err = mount_rootfs(&mounts, &w.target(), &w.staging(), RANGE, ns.as_fd())
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{mounts:?}: {err}");
        w.assert_clean();
        assert!(
            !w.target().exists(),
            "target created by the failed call is removed"
        );
        assert_eq!(owner(&upper), (0, 0));
        assert_eq!(owner(&work), (0, 0));
    }

    // Not a user namespace fd.
    let net = fs::File::open("/proc/self/ns/net").unwrap();
    let good = w.overlay(&[&lower], &upper, &work);
    let err = mount_rootfs(&good, &w.target(), &w.staging(), RANGE, net.as_fd()).unwrap_err();
    assert!(err.to_string().contains("not a user namespace"), "{err}");
    w.assert_clean();
    assert!(!w.target().exists());

    // Fails at the overlay mount itself (workdir inside upperdir), after layers were
    // staged and upper/work chowned: all of it is undone.
    let nested = upper.join("work");
    fs::create_dir(&nested).unwrap();
    let mounts = overlay(vec![l, u, format!("workdir={}", nested.display())]);
    let err = mount_rootfs(&mounts, &w.target(), &w.staging(), RANGE, ns.as_fd()).unwrap_err();
    assert!(matches!(err, RootfsError::Overlay { .. }), "{err}");
    w.assert_clean();
    assert_eq!(owner(&upper), (0, 0));
    assert_eq!(owner(&nested), (0, 0));
}

#[test]
fn an_already_mounted_target_is_refused_untouched() {
    let w = World::new();
    let lower = w.layer("layers/1", "x\n");
    let (upper, work) = w.snapshot();
    let ns = userns_fd(RANGE).unwrap();
    let mounts = w.overlay(&[&lower], &upper, &work);
    let m = mount_rootfs(&mounts, &w.target(), &w.staging(), RANGE, ns.as_fd()).unwrap();
    let err = mount_rootfs(&mounts, &w.target(), &w.staging(), RANGE, ns.as_fd()).unwrap_err();
    assert!(matches!(err, RootfsError::AlreadyMounted(_)), "{err}");
    // The first mount is still intact.
    assert_eq!(
        fs::read_to_string(w.target().join("etc/hostname")).unwrap(),
        "x\n"
    );
    m.unmount().unwrap();
    w.assert_clean();
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn layer_with_files(dir: &Path, files: usize) {
    for i in 0..files {
        let sub = dir.join(format!("d{}", i / 1000));
        if i % 1000 == 0 {
            fs::create_dir_all(&sub).unwrap();
        }
        fs::write(sub.join(format!("f{i}")), b"x").unwrap();
    }
}

/// Not a test of correctness: prints the median rootfs setup time for a 10-file and a
/// 50,000-file layer. `cargo test -p stockade-runtime --release --test userns_rootfs --
/// --ignored --nocapture rootfs_setup_time`
#[test]
#[ignore]
fn rootfs_setup_time() {
    let w = World::new();
    const RUNS: usize = 21;
    for files in [10usize, 50_000] {
        let lower = w.path(&format!("layer-{files}"));
        layer_with_files(&lower, files);
        let (mut with_ns, mut mount_only, mut teardown) = (vec![], vec![], vec![]);
        for run in 0..RUNS {
            let (upper, work) = (
                w.path(&format!("s{files}-{run}/fs")),
                w.path(&format!("s{files}-{run}/work")),
            );
            fs::create_dir_all(&upper).unwrap();
            fs::create_dir_all(&work).unwrap();
            let mounts = w.overlay(&[&lower], &upper, &work);
            let start = Instant::now();
            let ns = userns_fd(RANGE).unwrap();
            let ns_done = Instant::now();
            let m = mount_rootfs(&mounts, &w.target(), &w.staging(), RANGE, ns.as_fd()).unwrap();
            let mounted = Instant::now();
            m.unmount().unwrap();
            teardown.push(mounted.elapsed());
            with_ns.push(mounted - start);
            mount_only.push(mounted - ns_done);
        }
        println!(
            "rootfs setup, 1 layer of {files} files: median {:?} (userns fd + mount), \
             {:?} (mount only), unmount {:?}; {RUNS} runs",
            median(with_ns),
            median(mount_only),
            median(teardown)
        );
    }
    w.assert_clean();
}
