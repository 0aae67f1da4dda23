//! Paths inside an image's rootfs that a container's mounts pass through, under runc and
//! Stockade in the same run: a mount destination through a symlink runs under both
//! (resolved inside the rootfs, never out of it), and what cannot be mounted, or a state
//! directory the container's host root cannot traverse, fails naming the path and the
//! reason, leaving nothing behind.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use stockade_integration::exec::wait_for;
use stockade_integration::image::{process, write_oci_archive, Layer, OciImage};
use stockade_integration::probes::describe;
use stockade_integration::runtimes::TestRuntime;
use stockade_integration::Containerd;

/// busybox with `/data -> /var/data`, `/etc/evil -> /../../../<outside>` (a symlink
/// aimed out of the rootfs) and `/etc/loop -> /etc/loop`.
const LINKS_IMAGE: &str = "registry.k8s.io/stockade-test/links:latest";
/// busybox whose `/proc` is a symlink to `/tmp`.
const PROC_LINK_IMAGE: &str = "registry.k8s.io/stockade-test/proc-link:latest";

fn start() -> Containerd {
    Containerd::start().expect("starting a private containerd")
}

fn install_images(c: &Containerd, outside: &Path) {
    let mut links = Layer::busybox(Some(&["sh", "cat", "ls", "test", "true"])).unwrap();
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
    c.ctr_ok(&["images", "import", &archive.display().to_string()])
        .unwrap();
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
    let mut args: Vec<String> = vec!["run".into(), "--rm".into()];
    args.extend(flags.iter().map(|s| s.to_string()));
    args.extend(rt.ctr_run_args());
    args.push(image.into());
    args.push(id.into());
    args.extend(cmd.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    c.ctr(&refs)
}

fn assert_nothing_left(c: &Containerd, what: &str) {
    let settled = wait_for("nothing to be left", Duration::from_secs(10), || {
        c.leftovers().is_empty().then_some(())
    });
    if settled.is_err() {
        let left = c.leftovers();
        assert!(left.is_empty(), "{what}: left behind: {left:#?}");
    }
}

fn volume(c: &Containerd, name: &str) -> std::path::PathBuf {
    let dir = c.dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("marker"), format!("{name}\n")).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

#[test]
fn explore() {
    let c = start();
    let outside = c.dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    install_images(&c, &outside);
    let vol = volume(&c, "vol");
    let bind = |dst: &str| format!("type=bind,src={},dst={dst},options=rbind:ro", vol.display());
    for rt in runtimes() {
        for (n, (dst, image)) in [
            ("/data/x", LINKS_IMAGE),
            ("/etc/evil", LINKS_IMAGE),
            ("/etc/evil/sub", LINKS_IMAGE),
            ("/etc/loop/x", LINKS_IMAGE),
            ("/mnt/x", PROC_LINK_IMAGE),
            ("/dangling/x", LINKS_IMAGE),
        ]
        .iter()
        .enumerate()
        {
            let m = bind(dst);
            let out = run(
                &c,
                &rt,
                &["--mount", &m],
                image,
                &format!("x-{}-{n}", rt.label),
                &["sh", "-c", &format!("cat {dst}/marker; ls -la / /var/data")],
            );
            eprintln!("[{}] {dst} on {image}: {}", rt.label, describe(&out));
            eprintln!(
                "   outside now: {:?}",
                std::fs::read_dir(&outside)
                    .unwrap()
                    .flatten()
                    .map(|e| e.path())
                    .collect::<Vec<_>>()
            );
        }
    }
    let f = c.dir.join("resolv");
    std::fs::write(&f, "nameserver 192.0.2.1\n").unwrap();
    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
    for rt in runtimes() {
        let m = format!(
            "type=bind,src={},dst=/etc/resolv.conf,options=rbind:ro",
            f.display()
        );
        let out = run(
            &c,
            &rt,
            &["--mount", &m],
            LINKS_IMAGE,
            &format!("f-{}", rt.label),
            &[
                "sh",
                "-c",
                "cat /etc/resolv.conf; ls -la /run/systemd/resolve",
            ],
        );
        eprintln!("[{}] file bind: {}", rt.label, describe(&out));
    }
    std::fs::set_permissions(&c.dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    for rt in runtimes() {
        let out = run(
            &c,
            &rt,
            &[],
            LINKS_IMAGE,
            &format!("t-{}", rt.label),
            &["true"],
        );
        eprintln!("[{}] 0700: {}", rt.label, describe(&out));
    }
    std::fs::set_permissions(&c.dir, std::fs::Permissions::from_mode(0o711)).unwrap();
    assert_nothing_left(&c, "explore");
}
