//! Rootfs setup time against image size. Two views:
//! - library: `stockade_runtime::rootfs::mount_rootfs` (idmapped layer clone + overlay)
//!   against a plain overlay mount(2) (what runc's path does) on one lower layer with few
//!   and with many files;
//! - CRI: CreateContainer and StartContainer of images with few and many files, per runtime.

use crate::images::files_image;
use crate::lifecycle::{discard_pod, wait_state};
use crate::model::Section;
use crate::runtimes::{active_runtimes, Rt};
use crate::util::{bar, check_stop, ms_since};
use anyhow::{Context, Result};
use k8s_cri::v1::{ContainerState, ImageSpec};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use stockade_integration::Containerd;
use stockade_runtime::idrange::IdRange;
use stockade_runtime::rootfs::{mount_rootfs, RootfsMount};

/// A host ID range no pod uses (the bench's own; nothing is written with it but the top
/// of throw-away upper and work directories).
const RANGE: IdRange = IdRange {
    first: 3_000_000_000,
    size: 65_536,
};

/// Unmounts whatever is left below the bench's scratch directory, also on error.
struct ScratchMounts(PathBuf);

impl Drop for ScratchMounts {
    fn drop(&mut self) {
        let left = stockade_integration::teardown::unmount_under(&self.0);
        if !left.is_empty() {
            eprintln!("[bench] still mounted below {}: {left:?}", self.0.display());
        }
    }
}

fn make_lower(dir: &Path, files: usize) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    for i in 0..files {
        let sub = dir.join(format!("d{}", i / 1000));
        if i % 1000 == 0 {
            std::fs::create_dir_all(&sub)?;
        }
        std::fs::File::create(sub.join(format!("f{i}")))
            .with_context(|| format!("creating files in {}", sub.display()))?;
    }
    Ok(())
}

fn overlay_options(lower: &Path, s: &Path) -> Result<Vec<String>> {
    let (upper, work) = (s.join("upper"), s.join("work"));
    std::fs::create_dir_all(&upper)?;
    std::fs::create_dir_all(&work)?;
    Ok(vec![
        format!("lowerdir={}", lower.display()),
        format!("upperdir={}", upper.display()),
        format!("workdir={}", work.display()),
    ])
}

pub fn library(small: usize, big: usize, samples: usize) -> Result<Section> {
    let mut sec = Section::new(
        "rootfs_library",
        "Rootfs setup against image size (runtime library)",
        &format!(
            "One lower layer on disk with {small} or {big} files. `stockade`: \
             stockade_runtime::rootfs::mount_rootfs (idmapped clone of the layer with the \
             pod's user namespace, chown of the empty upper/work tops, overlay over the clone), \
             then unmount. `runc`: a plain overlay mount(2) of the same layer (the mount \
             containerd makes for runc), then umount. Fresh upper/work per sample; {samples} \
             samples per size, alternating. The user-namespace fd is made once (not timed)."
        ),
    );
    let scratch = tempfile::Builder::new()
        .prefix("stockade-bench-rootfs-")
        .tempdir_in("/var/tmp")
        .context("creating a scratch dir in /var/tmp")?;
    let _guard = ScratchMounts(scratch.path().to_path_buf());
    let pb = bar(2 * samples + 1, "rootfs (library)");
    pb.set_message(format!("writing {big} files"));
    let sizes = [small, big];
    for n in sizes {
        make_lower(&scratch.path().join(format!("lower-{n}")), n)?;
    }
    pb.inc(1);
    let userns =
        stockade_runtime::userns::userns_fd(RANGE).context("user namespace for the idmap")?;
    for i in 0..samples {
        for n in sizes {
            check_stop()?;
            let lower = scratch.path().join(format!("lower-{n}"));
            // Stockade's rootfs mount.
            let s = scratch.path().join(format!("s-{n}-{i}"));
            let mounts = [RootfsMount {
                kind: "overlay".into(),
                source: "overlay".into(),
                options: overlay_options(&lower, &s)?,
            }];
            let t = Instant::now();
            let mounted = mount_rootfs(
                &mounts,
                &s.join("rootfs"),
                &s.join("staging"),
                RANGE,
                userns.as_fd(),
            )
            .context("mount_rootfs")?;
            sec.push("stockade", &format!("mount_{n}_files"), "ms", ms_since(t));
            let t = Instant::now();
            mounted.unmount().context("unmounting the rootfs")?;
            sec.push("stockade", &format!("unmount_{n}_files"), "ms", ms_since(t));

            // A plain overlay, as containerd mounts it for runc.
            let p = scratch.path().join(format!("p-{n}-{i}"));
            let opts = overlay_options(&lower, &p)?.join(",");
            let target = p.join("rootfs");
            std::fs::create_dir_all(&target)?;
            let t = Instant::now();
            mount(
                Some("overlay"),
                &target,
                Some("overlay"),
                MsFlags::empty(),
                Some(opts.as_str()),
            )
            .with_context(|| format!("mount overlay on {}", target.display()))?;
            sec.push("runc", &format!("mount_{n}_files"), "ms", ms_since(t));
            let t = Instant::now();
            umount2(&target, MntFlags::empty())
                .with_context(|| format!("umount {}", target.display()))?;
            sec.push("runc", &format!("unmount_{n}_files"), "ms", ms_since(t));
            pb.inc(1);
        }
    }
    pb.finish_and_clear();
    Ok(sec)
}

pub fn cri(
    c: &Containerd,
    rts: &[Rt],
    small: usize,
    big: usize,
    samples: usize,
) -> Result<Section> {
    let mut sec = Section::new(
        "rootfs_cri",
        "Rootfs setup against image size (through CRI)",
        &format!(
            "Images with {small} and {big} files (one layer each, unpacked at import, before \
             timing). In one pod per runtime: CreateContainer, then StartContainer until \
             RUNNING (the shim mounts the rootfs here), then the container is stopped and \
             removed. {samples} samples per image and runtime, alternating."
        ),
    );
    // Seccomp changes neither shim memory nor the rootfs: runc-seccomp is left out here.
    let rts: Vec<Rt> = active_runtimes(rts, &mut sec)
        .into_iter()
        .filter(|r| !r.runc_seccomp)
        .collect();
    let cri = c.cri()?;
    let mut pods = Vec::new();
    let pb = bar(samples * 2 * rts.len(), "rootfs (CRI)");
    let result = (|| -> Result<()> {
        for rt in &rts {
            let cfg = cri.pod_config(&format!("bench-rootfs-{}", rt.label));
            match cri.run_pod_sandbox(&cfg, rt.handler()) {
                Ok(pod) => pods.push((rt.clone(), pod, cfg)),
                Err(e) => sec.fail(&rt.label, &e.context("RunPodSandbox")),
            }
        }
        for i in 0..samples {
            for n in [small, big] {
                for (rt, pod, pod_cfg) in &pods {
                    let label = &rt.label;
                    check_stop()?;
                    if sec.has_failed(label) {
                        continue;
                    }
                    let mut cfg =
                        rt.container_config(&cri, &format!("f{n}-{i}"), &["/bin/sleep", "3600"]);
                    cfg.image = Some(ImageSpec {
                        image: files_image(n),
                        ..Default::default()
                    });
                    let r = (|| -> Result<(f64, f64)> {
                        let t = Instant::now();
                        let id = cri
                            .create_container(pod, &cfg, pod_cfg)
                            .context("CreateContainer")?;
                        let create = ms_since(t);
                        let t = Instant::now();
                        let started =
                            cri.start_container(&id)
                                .context("StartContainer")
                                .and_then(|_| {
                                    wait_state(
                                        &cri,
                                        &id,
                                        ContainerState::ContainerRunning,
                                        Duration::from_secs(60),
                                    )
                                });
                        let start = ms_since(t);
                        let _ = cri.stop_container(&id, 0);
                        let _ = cri.remove_container(&id);
                        started?;
                        Ok((create, start))
                    })();
                    match r {
                        Ok((create, start)) => {
                            sec.push(label, &format!("create_{n}_files"), "ms", create);
                            sec.push(label, &format!("start_{n}_files"), "ms", start);
                            sec.push(
                                label,
                                &format!("create_start_{n}_files"),
                                "ms",
                                create + start,
                            );
                        }
                        Err(e) => sec.fail(label, &e),
                    }
                    pb.inc(1);
                }
            }
        }
        Ok(())
    })();
    for (_, pod, _) in &pods {
        discard_pod(&cri, pod);
    }
    pb.finish_and_clear();
    result.map(|_| sec)
}
