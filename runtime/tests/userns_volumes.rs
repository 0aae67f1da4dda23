//! Staged volumes, for real (root required): idmapped clones through a user namespace keep
//! the owners runc gives, sealed volumes stay read-only for the container, a filesystem
//! that cannot be idmapped is refused by name (or mounted plain when the plan says so),
//! and unstaging leaves nothing.

use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use stockade_runtime::hardener::{Mapping, PlannedVolume, VolumeKind};
use stockade_runtime::idrange::IdRange;
use stockade_runtime::userns::userns_fd;
use stockade_runtime::volume_settings::Unidmappable;
use stockade_runtime::volumes::{stage, unstage, VolumeError};

const RANGE: IdRange = IdRange {
    first: 300_000,
    size: 65_536,
};

struct World {
    dir: tempfile::TempDir,
}

impl World {
    fn new() -> World {
        // SAFETY: geteuid has no preconditions.
        assert_eq!(unsafe { libc::geteuid() }, 0, "these tests need root");
        let dir = tempfile::Builder::new()
            .prefix("stockade-volumes-")
            .tempdir()
            .unwrap();
        // The container's users (host IDs of RANGE) must reach the staging dir.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        World { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn mounts(&self) -> Vec<String> {
        let dir = self.dir.path().to_str().unwrap().to_string();
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
            .filter(|m| m.starts_with(&dir))
            .collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = unstage(&self.path("staging"));
        for m in self.mounts().iter().rev() {
            let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

fn volume(index: usize, source: &Path) -> PlannedVolume {
    PlannedVolume {
        index,
        destination: PathBuf::from(format!("/v{index}")),
        source: source.to_path_buf(),
        kind: VolumeKind::HostPath,
        recursive: true,
        mapping: Mapping::Idmapped,
        on_unidmappable: Unidmappable::Refuse,
        sealed: false,
    }
}

fn chown(path: &Path, uid: u32, gid: u32, mode: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// `script` under /bin/busybox sh in `userns` as container UID `uid`, GID `uid`, with the
/// supplementary `groups`: (exit code, stdout + stderr).
fn run_as(userns: &OwnedFd, uid: u32, groups: &[u32], script: &str) -> (i32, String) {
    let ns = userns.as_raw_fd();
    let groups: Vec<libc::gid_t> = groups.to_vec();
    let mut cmd = Command::new("/bin/busybox");
    cmd.args(["sh", "-c", script]);
    // SAFETY: runs in the forked child before exec; raw syscalls on data prepared before
    // the fork only.
    unsafe {
        cmd.pre_exec(move || {
            for r in [
                libc::setns(ns, libc::CLONE_NEWUSER),
                libc::setgroups(groups.len(), groups.as_ptr()),
                libc::setresgid(uid, uid, uid),
                libc::setresuid(uid, uid, uid),
            ] {
                if r != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn idmapped_volumes_keep_host_owners_and_sealed_ones_stay_read_only() {
    let w = World::new();
    // kubelet's layout for fsGroup 2000: a setgid volume root:2000 2775 with a group-readable
    // secret-like file, and a token owned by the pod's user 1000, 0600.
    let vol = w.path("vol");
    fs::create_dir(&vol).unwrap();
    chown(&vol, 0, 2000, 0o2775);
    fs::write(vol.join("shared"), "shared\n").unwrap();
    chown(&vol.join("shared"), 0, 2000, 0o440);
    let token = w.path("token");
    fs::write(&token, "tok\n").unwrap();
    chown(&token, 1000, 1000, 0o600);

    let ns = userns_fd(RANGE).unwrap();
    let staging = w.path("staging");
    let mut sealed = volume(1, &token);
    sealed.sealed = true;
    let staged = stage(&[volume(0, &vol), sealed], &staging, ns.as_fd()).unwrap();
    assert_eq!((staged.idmapped, staged.plain), (2, 0));

    let s = staging.display();
    let (code, out) = run_as(
        &ns,
        1000,
        &[2000],
        &format!(
            "cat {s}/0/shared {s}/1 && /bin/busybox stat -c '%u:%g %a' {s}/0 {s}/1 && \
             echo new > {s}/0/new && (echo x > {s}/1 && echo WROTE-TOKEN || true)"
        ),
    );
    assert_eq!(code, 0, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..4],
        ["shared", "tok", "0:2000 2775", "1000:1000 600"],
        "{out}"
    );
    assert!(
        !out.contains("WROTE-TOKEN"),
        "a sealed volume was written: {out}"
    );
    // On disk the new file is the container user's host ID, as runc gives it: 1000, and
    // the setgid directory's group.
    let new = fs::metadata(vol.join("new")).unwrap();
    assert_eq!((new.uid(), new.gid()), (1000, 2000));
    // Without group 2000 the shared file is unreadable, as under runc.
    let (code, out) = run_as(&ns, 1000, &[], &format!("cat {s}/0/shared"));
    assert_ne!(code, 0, "{out}");

    unstage(&staging).unwrap();
    assert!(!staging.exists());
    assert_eq!(w.mounts(), Vec::<String>::new());
}

#[test]
fn a_filesystem_that_cannot_be_idmapped_is_named_and_leaves_nothing() {
    let w = World::new();
    let ns = userns_fd(RANGE).unwrap();
    let staging = w.path("staging");
    let ok = w.path("ok");
    fs::create_dir(&ok).unwrap();
    // procfs has no idmapped mounts.
    let proc_file = Path::new("/proc/version");
    let mut proc_volume = volume(1, proc_file);
    proc_volume.recursive = false;
    let e = stage(&[volume(0, &ok), proc_volume.clone()], &staging, ns.as_fd()).unwrap_err();
    assert!(matches!(e, VolumeError::Unidmappable { .. }), "{e}");
    let text = e.to_string();
    for needle in [
        "volume at /v1",
        "/proc/version",
        "proc filesystem",
        "volumes.unidmappable",
    ] {
        assert!(text.contains(needle), "{text} lacks {needle}");
    }
    assert!(!staging.exists(), "staging left behind");
    assert_eq!(w.mounts(), Vec::<String>::new());

    // "unmapped": mounted plain, and reported.
    proc_volume.on_unidmappable = Unidmappable::Unmapped;
    let staged = stage(&[proc_volume], &staging, ns.as_fd()).unwrap();
    assert_eq!(staged.unmapped, [(0, "proc".to_string())]);
    assert_eq!(
        fs::read_to_string(staging.join("1")).unwrap(),
        fs::read_to_string(proc_file).unwrap()
    );
    unstage(&staging).unwrap();
    assert_eq!(w.mounts(), Vec::<String>::new());
}

#[test]
fn a_missing_source_is_named() {
    let w = World::new();
    let ns = userns_fd(RANGE).unwrap();
    let e = stage(
        &[volume(0, &w.path("gone"))],
        &w.path("staging"),
        ns.as_fd(),
    )
    .unwrap_err();
    let text = e.to_string();
    assert!(
        text.contains("volume at /v0") && text.contains("gone"),
        "{text}"
    );
    assert!(!w.path("staging").exists());
}

/// The running kernel's (major, minor).
fn kernel() -> (u32, u32) {
    let release = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut parts = release.trim().split(['.', '-']);
    let mut next = || parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    (next(), next())
}

/// kubelet's secret and token volumes are tmpfs: idmapped from Linux 6.3, refused naming
/// tmpfs and the kernel it needs before that.
#[test]
fn a_tmpfs_volume_is_idmapped_from_linux_6_3_and_named_before() {
    let w = World::new();
    let secret = w.path("secret");
    fs::create_dir(&secret).unwrap();
    nix::mount::mount(
        Some("tmpfs"),
        &secret,
        Some("tmpfs"),
        nix::mount::MsFlags::empty(),
        Some("mode=0755"),
    )
    .unwrap();
    fs::write(secret.join("password"), "hunter2\n").unwrap();
    chown(&secret.join("password"), 0, 2000, 0o440);
    let ns = userns_fd(RANGE).unwrap();
    let staging = w.path("staging");
    let result = stage(&[volume(0, &secret)], &staging, ns.as_fd());
    if kernel() >= (6, 3) {
        result.unwrap();
        let s = staging.display();
        let (code, out) = run_as(&ns, 1000, &[2000], &format!("cat {s}/0/password"));
        assert_eq!((code, out.as_str()), (0, "hunter2\n"));
        unstage(&staging).unwrap();
    } else {
        let e = result.unwrap_err().to_string();
        assert!(
            e.contains("tmpfs filesystem") && e.contains("Linux >= 6.3") && e.contains("/v0"),
            "{e}"
        );
        assert!(!staging.exists());
    }
}
