//! Ephemeral storage (issue 15 item 2): a container's writable layer bounded by a project
//! quota, on an ext4 image with project quotas that the test makes and mounts itself (as
//! containerd's root, so the overlay snapshotter's upper directories live on it); runc
//! beside it writes past the bound. Without project quotas, the profile's
//! `storage.unsupported` is obeyed.
//!
//! The quota test needs a kernel with ext4 quota support (CONFIG_QUOTA, CONFIG_QFMT_V2):
//! where the image cannot be mounted with prjquota it says so loudly and is skipped,
//! unless STOCKADE_REQUIRE_PRJQUOTA=1 (set where it must run, e.g. the cgroup2 VM's 6.1).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;
use stockade_integration::containerd::StartOptions;
use stockade_integration::exec::output_with_timeout;
use stockade_integration::image::BUSYBOX_IMAGE;
use stockade_integration::paths;
use stockade_integration::runtimes::TestRuntime;
use stockade_integration::Containerd;
use stockade_runtime::hardener::storage::{ANNOTATION_BYTES, ANNOTATION_INODES};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;
/// The bound the quota test sets: small, since every byte is written through an
/// emulated disk in the cgroup2 VM (a 1 GiB bound took five minutes there).
const LIMIT_MIB: u64 = 128;

/// An ext4 image with the `project,quota` features, loop-mounted with prjquota in a temp
/// dir; unmounted and detached on Drop (also when the test fails).
struct QuotaFs {
    dir: PathBuf,
    mnt: PathBuf,
    loop_dev: Option<String>,
    mounted: bool,
}

impl QuotaFs {
    /// Err(why) where this kernel cannot mount it.
    fn make(size: u64) -> Result<QuotaFs, String> {
        let dir = tempfile::Builder::new()
            .prefix("stockade-prjquota-")
            // On disk, not tmpfs: the loop device's writes to its backing file are
            // charged to the writer's memory cgroup, and tmpfs pages cannot be reclaimed.
            .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .map_err(|e| e.to_string())?
            .keep();
        let mut fs = QuotaFs {
            mnt: dir.join("mnt"),
            dir,
            loop_dev: None,
            mounted: false,
        };
        let img = fs.dir.join("fs.img");
        std::fs::create_dir(&fs.mnt).map_err(|e| e.to_string())?;
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(size))
            .map_err(|e| e.to_string())?;
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-O", "project,quota"])
            .arg(&img))?;
        let dev = run(Command::new("losetup").args(["--find", "--show"]).arg(&img))?;
        fs.loop_dev = Some(dev.trim().to_string());
        run(Command::new("mount")
            .args(["-t", "ext4", "-o", "prjquota"])
            .arg(dev.trim())
            .arg(&fs.mnt))
        .map_err(|e| {
            let dmesg = Command::new("dmesg")
                .output()
                .map(|o| o.stdout)
                .unwrap_or_default();
            let last = String::from_utf8_lossy(&dmesg)
                .lines()
                .rev()
                .find(|l| l.contains("EXT4-fs"))
                .unwrap_or("")
                .to_string();
            format!("{e} {last}")
        })?;
        fs.mounted = true;
        // containerd's root: searchable by the containers' unprivileged host root.
        let root = fs.root();
        std::fs::create_dir(&root).map_err(|e| e.to_string())?;
        for d in [&fs.dir, &fs.mnt, &root] {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))
                .map_err(|e| e.to_string())?;
        }
        Ok(fs)
    }

    fn root(&self) -> PathBuf {
        self.mnt.join("containerd")
    }
}

impl Drop for QuotaFs {
    fn drop(&mut self) {
        if self.mounted {
            let ok = Command::new("umount").arg(&self.mnt).status();
            if !ok.is_ok_and(|s| s.success()) {
                eprintln!(
                    "[prjquota] umount {} failed: lazy unmount",
                    self.mnt.display()
                );
                let _ = Command::new("umount").arg("-l").arg(&self.mnt).status();
            }
        }
        if let Some(dev) = &self.loop_dev {
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(cmd: &mut Command) -> Result<String, String> {
    let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{cmd:?}: {}", describe(&out)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn describe(out: &Output) -> String {
    format!(
        "status {}; stdout: {}; stderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout).trim(),
        String::from_utf8_lossy(&out.stderr).trim()
    )
}

/// `ctr run --rm [--annotation k=v]... <rt> busybox id sh -c script`.
fn ctr_run(
    c: &Containerd,
    rt: &TestRuntime,
    annotations: &[String],
    id: &str,
    script: &str,
) -> Output {
    let mut args: Vec<String> = vec!["run".into(), "--rm".into()];
    for a in annotations {
        args.push("--annotation".into());
        args.push(a.clone());
    }
    args.extend(rt.ctr_run_args());
    args.extend([BUSYBOX_IMAGE, id, "sh", "-c", script].map(String::from));
    // Writing a GiB through a loop device in the cgroup2 VM (TCG) takes longer than ctr's
    // usual deadline.
    let mut cmd = Command::new(c.binaries().ctr());
    cmd.arg("--address")
        .arg(&c.socket)
        .args(["--namespace", c.namespace()])
        .args(&args);
    output_with_timeout(&mut cmd, Duration::from_secs(600)).expect("running ctr")
}

/// The value of `key=N` in a script's output.
fn figure(out: &Output, key: &str) -> Option<u64> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.trim().strip_prefix(key)?.strip_prefix('=')?.parse().ok())
}

/// Writes until the first error; prints what dd said and how many bytes landed. O_DIRECT:
/// buffered, the dirty pages would be charged to the container's memory limit (an OOM
/// kill in the slow cgroup2 VM once, at a 1 GiB bound), which is not what this measures.
const FILL_BYTES: &str =
    "dd if=/dev/zero of=/tmp/fill bs=1M count=$MIB oflag=direct 2>/tmp/dd.err; \
     echo dd=$?; tail -n1 /tmp/dd.err; cat /tmp/dd.err | grep -i 'space\\|quota'; \
     echo bytes=$(stat -c %s /tmp/fill)";
/// Creates files until the first error.
const FILL_INODES: &str = "mkdir /tmp/many; i=0; while [ $i -lt $MAX ]; do \
     echo > /tmp/many/f$i 2>/tmp/err || break; i=$((i+1)); done; cat /tmp/err; echo files=$i";

/// What the quota test leaves in the shim state: no project ID claimed, no quota record.
fn claims_left(c: &Containerd) -> Vec<PathBuf> {
    let table = stockade_runtime::project_quota::table_dir(&c.stockade_state);
    std::fs::read_dir(&table)
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default()
}

#[test]
fn ephemeral_storage_is_bounded_by_a_project_quota() {
    let fs = match QuotaFs::make(GIB) {
        Ok(fs) => fs,
        Err(why) if std::env::var_os("STOCKADE_REQUIRE_PRJQUOTA").is_none() => {
            eprintln!(
                "!!! SKIPPED ephemeral_storage_is_bounded_by_a_project_quota: this kernel cannot \
                 mount ext4 with project quotas ({why}); run it where it can (the cgroup2 VM's \
                 6.1, STOCKADE_REQUIRE_PRJQUOTA=1)"
            );
            return;
        }
        Err(why) => panic!("ext4 with project quotas: {why}"),
    };
    let c = Containerd::start_with(StartOptions {
        root: Some(fs.root()),
        ..StartOptions::default()
    })
    .expect("containerd on the prjquota filesystem");
    let stockade = TestRuntime::stockade().expect("default profile");
    let runc = TestRuntime::runc();

    // LIMIT_MIB: dd stops there.
    let limit = LIMIT_MIB * MIB;
    let bound = format!("{ANNOTATION_BYTES}={LIMIT_MIB}Mi");
    let script = FILL_BYTES.replace("$MIB", &(LIMIT_MIB * 3 / 2).to_string());
    let out = ctr_run(
        &c,
        &stockade,
        std::slice::from_ref(&bound),
        "fill-bytes",
        &script,
    );
    let bytes = figure(&out, "bytes").unwrap_or_else(|| panic!("{}", describe(&out)));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    eprintln!(
        "[prjquota] stockade, {LIMIT_MIB} MiB limit: dd stopped at {bytes} bytes ({:.1} MiB): {}",
        bytes as f64 / MIB as f64,
        text.replace('\n', " | ")
    );
    assert!(
        bytes > limit - 16 * MIB && bytes <= limit,
        "stockade wrote {bytes} bytes under a {LIMIT_MIB} MiB limit: {}",
        describe(&out)
    );
    assert!(
        text.contains("No space left on device") || text.contains("Disk quota exceeded"),
        "dd did not stop on a full quota: {}",
        describe(&out)
    );
    // runc in the same run: no bound, past it (a quarter more asked, all written).
    let past = LIMIT_MIB * 5 / 4;
    let script = FILL_BYTES.replace("$MIB", &past.to_string());
    let out = ctr_run(&c, &runc, &[bound], "fill-bytes-runc", &script);
    let runc_bytes = figure(&out, "bytes").unwrap_or_else(|| panic!("{}", describe(&out)));
    eprintln!("[prjquota] runc: wrote {runc_bytes} bytes");
    assert_eq!(runc_bytes, past * MIB, "runc: {}", describe(&out));

    // Inodes: 500, then the next file fails.
    let inodes = format!("{ANNOTATION_INODES}=500");
    let script = FILL_INODES.replace("$MAX", "2000");
    let out = ctr_run(
        &c,
        &stockade,
        std::slice::from_ref(&inodes),
        "fill-inodes",
        &script,
    );
    let files = figure(&out, "files").unwrap_or_else(|| panic!("{}", describe(&out)));
    eprintln!(
        "[prjquota] stockade, 500-inode limit: {files} files created: {}",
        String::from_utf8_lossy(&out.stdout).replace('\n', " | ")
    );
    assert!(
        (480..500).contains(&files),
        "stockade created {files} files under a 500-inode limit: {}",
        describe(&out)
    );
    let out = ctr_run(
        &c,
        &runc,
        &[inodes],
        "fill-inodes-runc",
        &FILL_INODES.replace("$MAX", "1000"),
    );
    assert_eq!(
        figure(&out, "files"),
        Some(1000),
        "runc: {}",
        describe(&out)
    );

    // Bad input: named, refused, nothing left behind.
    for (annotation, expect) in [
        (format!("{ANNOTATION_BYTES}=lots"), ANNOTATION_BYTES),
        (
            format!("{ANNOTATION_BYTES}=51Gi"),
            "ephemeral-storage-ceiling",
        ),
        (format!("{ANNOTATION_INODES}=-3"), ANNOTATION_INODES),
    ] {
        let out = ctr_run(
            &c,
            &stockade,
            std::slice::from_ref(&annotation),
            "bad-annotation",
            "true",
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(expect),
            "{annotation}: {}",
            describe(&out)
        );
        let _ = c.ctr(&["containers", "rm", "bad-annotation"]);
    }
    assert_eq!(
        claims_left(&c),
        Vec::<PathBuf>::new(),
        "project IDs left claimed"
    );
    let left = c.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
    drop(c);
    drop(fs);
}

/// The test copy of the default profile (seccomp paths absolute) with
/// `storage.unsupported` set to `unsupported`, written to `dir`.
fn profile_variant(dir: &Path, unsupported: &str) -> TestRuntime {
    let base = paths::profile("default.toml").expect("default profile");
    let text = std::fs::read_to_string(&base).unwrap();
    let line = format!("unsupported = \"{unsupported}\"");
    let changed = text.replace("unsupported = \"unbounded\"", &line);
    assert!(
        changed.contains(&line),
        "no storage.unsupported in {}",
        base.display()
    );
    let path = dir.join(format!("storage-{unsupported}.toml"));
    std::fs::write(&path, changed).unwrap();
    let mut rt = TestRuntime::stockade().unwrap();
    rt.profile = Some(path);
    rt
}

#[test]
fn ephemeral_storage_without_project_quotas_follows_the_profile() {
    let c = Containerd::start().expect("containerd");
    let dir = tempfile::tempdir().unwrap();
    let refuse = profile_variant(dir.path(), "refuse");
    let out = ctr_run(&c, &refuse, &[], "no-quota-refused", "true");
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("[prjquota] refuse on {}: {}", c.root.display(), err.trim());
    assert!(
        !out.status.success()
            && err.contains("ephemeral-storage")
            && err.contains("project quotas need ext4"),
        "{}",
        describe(&out)
    );
    let _ = c.ctr(&["containers", "rm", "no-quota-refused"]);

    let audit_log = paths::test_audit_log();
    let from = std::fs::metadata(&audit_log).map_or(0, |m| m.len()) as usize;
    let stockade = TestRuntime::stockade().unwrap();
    let out = ctr_run(&c, &stockade, &[], "no-quota-unbounded", "echo ran");
    assert!(out.status.success(), "{}", describe(&out));
    let text = std::fs::read(&audit_log).unwrap_or_default();
    let finding = String::from_utf8_lossy(text.get(from..).unwrap_or_default())
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["container_id"] == "no-quota-unbounded")
        .flat_map(|l| l["findings"].as_array().cloned().unwrap_or_default())
        .find(|f| f["rule"] == "ephemeral-storage");
    let finding = finding
        .unwrap_or_else(|| panic!("no ephemeral-storage finding in {}", audit_log.display()));
    eprintln!("[prjquota] unbounded: finding {finding}");
    assert!(finding["reason"]
        .as_str()
        .unwrap_or("")
        .contains("unbounded"));
    let log = std::fs::read_to_string(&c.log_path).unwrap_or_default();
    assert!(
        log.lines().any(|l| l.contains("no-quota-unbounded")
            && l.contains("ephemeral storage")
            && l.contains("WARN")),
        "no warning in containerd's log {}",
        c.log_path.display()
    );
    assert_eq!(claims_left(&c), Vec::<PathBuf>::new());
    let left = c.leftovers();
    assert!(left.is_empty(), "left behind: {left:#?}");
}
