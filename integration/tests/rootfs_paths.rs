//! Paths inside an image's rootfs that a container's mounts pass through, under runc and
//! Stockade in the same run: a mount destination through a symlink runs under both
//! (resolved inside the rootfs, never out of it), and what cannot be mounted, or a state
//! directory the container's host root cannot traverse, fails naming the path and the
//! reason, leaving nothing behind.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;

use k8s_cri::v1::{ImageSpec, Mount};
use stockade_integration::containerd::CRI_NAMESPACE;
use stockade_integration::image::{process, write_oci_archive, Layer, OciImage};
use stockade_integration::probes::{ctr_run_image_args, describe};
use stockade_integration::runtimes::TestRuntime;
use stockade_integration::Containerd;

/// busybox with `/data -> /var/data`, `/etc/evil -> /../../../<outside>` (a symlink
/// aimed out of the rootfs) and `/etc/loop -> /etc/loop`.
const LINKS_IMAGE: &str = "registry.k8s.io/stockade-test/links:latest";
/// busybox whose `/proc` is a symlink to `/tmp`.
const PROC_LINK_IMAGE: &str = "registry.k8s.io/stockade-test/proc-link:latest";

/// A private containerd with the images installed, and the host directory the image's
/// `/etc/evil` points at (in-root resolution must never reach it).
fn start() -> (Containerd, PathBuf) {
    let c = Containerd::start().expect("starting a private containerd");
    let outside = c.dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    install_images(&c, &outside);
    (c, outside)
}

fn install_images(c: &Containerd, outside: &Path) {
    let mut links = Layer::busybox(Some(&["sh", "cat", "sleep", "true"])).unwrap();
    links.minimal_etc().unwrap();
    links.dir("var/data", 0o755).unwrap();
    links.symlink("data", "/var/data").unwrap();
    links
        .symlink(
            "etc/evil",
            Path::new("/../../..").join(outside.strip_prefix("/").unwrap()),
        )
        .unwrap();
    links.symlink("etc/loop", "/etc/loop").unwrap();
    links.symlink("dangling", "/srv/none").unwrap();
    links
        .symlink("etc/resolv.conf", "../run/systemd/resolve/stub-resolv.conf")
        .unwrap();
    let links = links.finish().unwrap();
    let mut proc_link = Layer::busybox(Some(&["sh", "cat"])).unwrap();
    proc_link.minimal_etc().unwrap();
    // After the layer's /proc directory: the applier replaces it with the link.
    proc_link.symlink("proc", "/tmp").unwrap();
    let proc_link = proc_link.finish().unwrap();
    let archive = c.dir.join("rootfs-paths-images.tar");
    write_oci_archive(
        &archive,
        &[
            OciImage {
                name: LINKS_IMAGE,
                layer: &links,
                process: process(&["sh"], &[("org.stockade.test", "links")]),
            },
            OciImage {
                name: PROC_LINK_IMAGE,
                layer: &proc_link,
                process: process(&["sh"], &[("org.stockade.test", "proc-link")]),
            },
        ],
    )
    .unwrap();
    for ns in [c.namespace(), CRI_NAMESPACE] {
        let out = c.ctr_in(ns, &["images", "import", &archive.display().to_string()]);
        assert!(
            out.status.success(),
            "importing into {ns}: {}",
            describe(&out)
        );
    }
}

/// A container's run under runc and under Stockade.
struct Pair {
    runc: Output,
    stockade: Output,
}

fn runtimes() -> [TestRuntime; 2] {
    [TestRuntime::runc(), TestRuntime::stockade().unwrap()]
}

/// `ctr run --rm` of `image` under `rt` with `flags`, running `cmd`.
fn run(
    c: &Containerd,
    rt: &TestRuntime,
    flags: &[&str],
    image: &str,
    id: &str,
    cmd: &[&str],
) -> Output {
    let flags: Vec<&str> = std::iter::once("--rm")
        .chain(flags.iter().copied())
        .collect();
    let args = ctr_run_image_args(rt, image, &flags, id, cmd);
    c.ctr(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn assert_nothing_left(c: &Containerd, what: &str) {
    c.assert_nothing_left(what)
}

fn volume(c: &Containerd, name: &str) -> PathBuf {
    let dir = c.dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("marker"), format!("{name}\n")).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `image` with `flags` under runc, then Stockade (ids `<id>-runc`, `<id>-stockade`).
fn both(c: &Containerd, flags: &[&str], image: &str, id: &str, cmd: &[&str]) -> Pair {
    let [runc, stockade] = runtimes();
    Pair {
        runc: run(c, &runc, flags, image, &format!("{id}-runc"), cmd),
        stockade: run(c, &stockade, flags, image, &format!("{id}-stockade"), cmd),
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Every entry of `dir` (none expected: in-root resolution never reaches it).
fn entries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// A mount destination through a symlink of the image (to a directory that exists, to
/// one that does not, a file bind through a dangling relative link as Ubuntu's
/// /etc/resolv.conf is, and a link aimed out of the rootfs) runs under runc and Stockade
/// alike: the volume is at the destination and at the link's in-root target, and nothing
/// appears outside the rootfs.
#[test]
fn symlinked_destinations_run_as_under_runc() {
    let (c, outside) = start();
    let vol = volume(&c, "vol");
    let resolv = c.dir.join("resolv.conf");
    std::fs::write(&resolv, "nameserver 192.0.2.1\n").unwrap();
    std::fs::set_permissions(&resolv, std::fs::Permissions::from_mode(0o644)).unwrap();
    let inside_outside = outside.display().to_string();
    // (case, source, destination, where the mount must also show)
    let cases = [
        ("link-to-dir", &vol, "/data/x", "/var/data/x".to_string()),
        (
            "dangling-link",
            &vol,
            "/dangling/x",
            "/srv/none/x".to_string(),
        ),
        (
            "out-of-rootfs-link",
            &vol,
            "/etc/evil/sub",
            format!("{inside_outside}/sub"),
        ),
        (
            "file-through-dangling-link",
            &resolv,
            "/etc/resolv.conf",
            "/run/systemd/resolve/stub-resolv.conf".to_string(),
        ),
    ];
    for (case, src, dst, resolved) in cases {
        let mount = format!("type=bind,src={},dst={dst},options=rbind:ro", src.display());
        let file = if src.is_dir() { "/marker" } else { "" };
        let script = format!("cat {dst}{file} && cat {resolved}{file}");
        let pair = both(
            &c,
            &["--mount", &mount],
            LINKS_IMAGE,
            case,
            &["sh", "-c", &script],
        );
        let expected = std::fs::read_to_string(if src.is_dir() {
            src.join("marker")
        } else {
            src.to_path_buf()
        })
        .unwrap();
        for (label, out) in [("runc", &pair.runc), ("stockade", &pair.stockade)] {
            eprintln!(
                "[rootfs paths] {case} under {label}: {}",
                describe(out).trim_end()
            );
            assert!(
                out.status.success(),
                "{case} under {label}: {}",
                describe(out)
            );
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                expected.repeat(2),
                "{case} under {label}: the volume at {dst} and {resolved}"
            );
        }
        assert!(
            entries(&outside).is_empty(),
            "{case}: written outside the rootfs: {:?}",
            entries(&outside)
        );
        assert_nothing_left(&c, case);
    }
}

/// What cannot be mounted (a symlink loop, a file in the way, proc on a symlink) fails
/// under runc too; under Stockade the error names the mount's path and the reason, and
/// nothing is left behind.
#[test]
fn unmountable_destinations_fail_naming_path_and_reason() {
    let (c, _) = start();
    let vol = volume(&c, "vol");
    let bind = |dst: &str| format!("type=bind,src={},dst={dst},options=rbind:ro", vol.display());
    // (case, mount flags, image, what Stockade's error must say)
    let cases: [(&str, Vec<String>, &str, &[&str]); 3] = [
        (
            "symlink-loop",
            vec!["--mount".into(), bind("/etc/loop/x")],
            LINKS_IMAGE,
            &["destination /etc/loop/x", "symlink loop at /etc/loop"],
        ),
        (
            "file-in-the-way",
            vec!["--mount".into(), bind("/etc/passwd/x")],
            LINKS_IMAGE,
            &[
                "destination /etc/passwd/x",
                "/etc/passwd in the image is not a directory",
            ],
        ),
        (
            "proc-symlink",
            vec![],
            PROC_LINK_IMAGE,
            &[
                "proc at /proc",
                "/proc in the image is a symlink (to /tmp)",
                "ordinary directory",
            ],
        ),
    ];
    for (case, flags, image, needles) in cases {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let pair = both(&c, &flags, image, case, &["true"]);
        eprintln!(
            "[rootfs paths] {case} under runc: {}",
            describe(&pair.runc).trim_end()
        );
        eprintln!(
            "[rootfs paths] {case} under stockade: {}",
            describe(&pair.stockade).trim_end()
        );
        assert!(
            !pair.runc.status.success(),
            "{case}: runc ran it: {}",
            describe(&pair.runc)
        );
        assert!(!pair.stockade.status.success(), "{case}: Stockade ran it");
        let text = stderr(&pair.stockade);
        for needle in needles {
            assert!(
                text.contains(needle),
                "{case}: the error does not say {needle:?}: {text}"
            );
        }
        assert!(
            !text.contains("failed to prepare rootfs"),
            "{case}: libcontainer's opaque error: {text}"
        );
        assert_nothing_left(&c, case);
    }
}

/// containerd's state in a directory the container's host root cannot traverse (a 0700
/// `mktemp -d`): runc runs (its container root is host root); Stockade's container root is
/// an unprivileged host UID, so it fails before mounting anything, naming the directory, its
/// mode and that UID, and leaves nothing behind.
#[test]
fn unreachable_bundle_fails_naming_the_directory() {
    let (c, _) = start();
    std::fs::set_permissions(&c.dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let pair = both(&c, &[], LINKS_IMAGE, "private-state", &["true"]);
    std::fs::set_permissions(&c.dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    eprintln!(
        "[rootfs paths] 0700 state under runc: {}",
        describe(&pair.runc).trim_end()
    );
    eprintln!(
        "[rootfs paths] 0700 state under stockade: {}",
        describe(&pair.stockade).trim_end()
    );
    assert!(pair.runc.status.success(), "runc: {}", describe(&pair.runc));
    assert!(!pair.stockade.status.success(), "Stockade ran it");
    let text = stderr(&pair.stockade);
    let dir = format!("{} (mode 0700, owner 0:0)", c.dir.display());
    for needle in [
        dir.as_str(),
        "out of reach of the container's root, host UID ",
        "chmod o+x",
    ] {
        assert!(
            text.contains(needle),
            "the error does not say {needle:?}: {text}"
        );
    }
    assert_nothing_left(&c, "private-state");
}

/// Through CRI: a volume at `/data/x` (through `/data -> /var/data`) in an image whose
/// /etc/resolv.conf is a dangling relative link (containerd binds its own resolv.conf there,
/// as on Ubuntu images) runs under runc and Stockade alike.
#[test]
fn cri_volume_through_a_symlink_runs_as_under_runc() {
    let (c, outside) = start();
    let vol = volume(&c, "vol");
    let cri = c.cri().unwrap();
    for rt in runtimes() {
        let pod_cfg = cri.pod_config(&format!("links-{}", rt.label));
        let pod = cri.run_pod_sandbox(&pod_cfg, rt.cri_handler).unwrap();
        let mut cfg = cri.container_config("app", &["sleep", "600"]);
        cfg.image = Some(ImageSpec {
            image: LINKS_IMAGE.into(),
            ..Default::default()
        });
        cfg.command = vec!["/bin/sh".into(), "-c".into(), "sleep 600".into()];
        cfg.mounts = vec![Mount {
            container_path: "/data/x".into(),
            host_path: vol.display().to_string(),
            readonly: true,
            ..Default::default()
        }];
        let id = cri.run_container(&pod, &cfg, &pod_cfg);
        let id = id.unwrap_or_else(|e| panic!("{} ran no container: {e:#}", rt.label));
        let out = cri
            .exec_sync(
                &id,
                &[
                    "cat",
                    "/data/x/marker",
                    "/var/data/x/marker",
                    "/etc/resolv.conf",
                ],
            )
            .unwrap()
            .ok()
            .unwrap_or_else(|e| panic!("{}: {e:#}", rt.label));
        eprintln!("[rootfs paths] CRI under {}: {out}", rt.label);
        assert!(out.starts_with("vol\nvol\n"), "{}: {out}", rt.label);
        cri.stop_pod_sandbox(&pod).unwrap();
        cri.remove_pod_sandbox(&pod).unwrap();
    }
    assert!(entries(&outside).is_empty());
    assert_nothing_left(&c, "CRI volume through a symlink");
}
