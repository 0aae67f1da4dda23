//! A pod's volumes laid out the way kubelet lays them out, under a kubelet root of the
//! test's: `<root>/pods/<pod uid>/volumes/<plugin>/<name>`, secrets and projected tokens on
//! a tmpfs of their own in kubelet's atomic-writer shape (`..<timestamp>/` holding the files,
//! `..data` pointing at it, each key a symlink through `..data`), fsGroup ownership applied as
//! kubelet's SetVolumeOwnership does (group fsGroup, setgid directories, group read for
//! read-only volumes, group read/write otherwise), and a CSI-like volume on a real ext4
//! filesystem made from a loop image. Dropping it unmounts and removes everything.

use anyhow::{bail, Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::os::unix::fs::{chown, symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const SECRET: &str = "kubernetes.io~secret";
pub const PROJECTED: &str = "kubernetes.io~projected";
pub const EMPTY_DIR: &str = "kubernetes.io~empty-dir";
pub const CSI: &str = "kubernetes.io~csi";

/// The directory kubelet's atomic writer puts a volume's files in.
const PAYLOAD_DIR: &str = "..2026_12_01_00_00_00.000000001";

pub struct KubeletPod {
    /// `<root>/pods/<uid>`.
    pub dir: PathBuf,
    mounts: Vec<PathBuf>,
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}

fn set_owner(path: &Path, uid: u32, gid: u32) -> Result<()> {
    chown(path, Some(uid), Some(gid)).with_context(|| format!("chown {}", path.display()))
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

impl KubeletPod {
    /// The pod directory of `uid` under `kubelet_root` (created, root-owned 0750 as kubelet
    /// makes it).
    pub fn new(kubelet_root: &Path, uid: &str) -> Result<KubeletPod> {
        let dir = kubelet_root.join("pods").join(uid);
        std::fs::create_dir_all(dir.join("volumes"))
            .with_context(|| format!("creating {}", dir.display()))?;
        set_mode(&dir, 0o750)?;
        Ok(KubeletPod {
            dir,
            mounts: Vec::new(),
        })
    }

    fn volume_dir(&self, plugin: &str, name: &str) -> Result<PathBuf> {
        let dir = self.dir.join("volumes").join(plugin).join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(dir)
    }

    fn mount_tmpfs(&mut self, dir: &Path) -> Result<()> {
        mount(
            Some("tmpfs"),
            dir,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("mode=0755"),
        )
        .with_context(|| format!("mounting a tmpfs on {}", dir.display()))?;
        self.mounts.push(dir.to_path_buf());
        Ok(())
    }

    /// A secret-like volume of `plugin` (secret or projected) on its own tmpfs: each file
    /// `(key, content, mode, uid, gid)`, directories root:`dir_group`, setgid.
    pub fn atomic_volume(
        &mut self,
        plugin: &str,
        name: &str,
        dir_group: u32,
        files: &[(&str, &str, u32, u32, u32)],
    ) -> Result<PathBuf> {
        let dir = self.volume_dir(plugin, name)?;
        self.mount_tmpfs(&dir)?;
        let payload = dir.join(PAYLOAD_DIR);
        std::fs::create_dir(&payload)?;
        for (key, content, mode, uid, gid) in files {
            let file = payload.join(key);
            std::fs::write(&file, content)?;
            set_owner(&file, *uid, *gid)?;
            set_mode(&file, *mode)?;
            symlink(format!("..data/{key}"), dir.join(key))?;
        }
        symlink(PAYLOAD_DIR, dir.join("..data"))?;
        for d in [&payload, &dir] {
            set_owner(d, 0, dir_group)?;
            set_mode(d, 0o2755)?;
        }
        Ok(dir)
    }

    /// An emptyDir with fsGroup `fs_group`: root:fs_group 2777.
    pub fn empty_dir(&mut self, name: &str, fs_group: u32) -> Result<PathBuf> {
        let dir = self.volume_dir(EMPTY_DIR, name)?;
        set_owner(&dir, 0, fs_group)?;
        set_mode(&dir, 0o2777)?;
        Ok(dir)
    }

    /// A CSI-like volume on a fresh ext4 filesystem (`size_mib` loop image beside the
    /// volumes), its root root:fs_group 2775 and `files` (name, content) root:fs_group 0664.
    pub fn ext4_volume(
        &mut self,
        name: &str,
        fs_group: u32,
        size_mib: u64,
        files: &[(&str, &str)],
    ) -> Result<PathBuf> {
        let dir = self.volume_dir(CSI, name)?.join("mount");
        std::fs::create_dir_all(&dir)?;
        let image = self.dir.join(format!("{name}.ext4"));
        let f = std::fs::File::create(&image)?;
        f.set_len(size_mib << 20)?;
        drop(f);
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image))?;
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "loop"])
            .arg(&image)
            .arg(&dir))?;
        self.mounts.push(dir.clone());
        set_owner(&dir, 0, fs_group)?;
        set_mode(&dir, 0o2775)?;
        for (file, content) in files {
            let path = dir.join(file);
            std::fs::write(&path, content)?;
            set_owner(&path, 0, fs_group)?;
            set_mode(&path, 0o664)?;
        }
        Ok(dir)
    }

    /// kubelet's managed /etc/hosts (`<pod dir>/etc-hosts`, root 0644).
    pub fn etc_hosts(&self, hostname: &str) -> Result<PathBuf> {
        let path = self.dir.join("etc-hosts");
        std::fs::write(
            &path,
            format!(
                "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n10.0.0.9\t{hostname}\n"
            ),
        )?;
        set_mode(&path, 0o644)?;
        Ok(path)
    }

    /// Loop devices still attached to this pod's images (should be none after drop).
    pub fn loop_devices(dir: &Path) -> Vec<String> {
        let out = Command::new("losetup").arg("-a").output();
        let text = out
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let dir = dir.display().to_string();
        text.lines()
            .filter(|l| l.contains(&dir))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for KubeletPod {
    fn drop(&mut self) {
        for m in self.mounts.iter().rev() {
            // A loop mount made with `-o loop` detaches its device when unmounted.
            if let Err(e) = umount2(m, MntFlags::MNT_DETACH) {
                eprintln!("[kubelet layout] unmounting {}: {e}", m.display());
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            eprintln!("[kubelet layout] removing {}: {e}", self.dir.display());
        }
    }
}
