//! A private containerd for one test: its own config, root, state, sockets, CNI network
//! and images in a temp dir. Stopped by PID, and everything it created removed, on Drop
//! (also when the test panics).

use crate::binaries::{Binaries, ConfigVersion};
use crate::config::{InstanceConfig, CNI_BIN_DIR};
use crate::cri::Cri;
use crate::exec::{output_with_timeout, tty_output_with_timeout, wait_for, TtyOutput};
use crate::image::{write_test_images_archive, PAUSE_IMAGE};
pub use crate::leftovers::{shim_socket_path, Leftovers};
use crate::paths;
use crate::teardown;
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stockade_runtime::state_dir::{self, StateDir};

/// containerd's CRI namespace.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// Runtime name (runtime_type) of Stockade, as given to `ctr run --runtime`.
pub const STOCKADE_RUNTIME: &str = "io.containerd.stockade.v1";
/// Runtime name of runc's v2 shim.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
/// CRI runtime handlers registered in the private containerd.
pub const HANDLER_STOCKADE: &str = "stockade";
pub const HANDLER_STOCKADE_STRICT: &str = "stockade-strict";
pub const HANDLER_STOCKADE_RECORD: &str = "stockade-record";
pub const HANDLER_RUNC: &str = "runc";

/// Deadline for one `ctr` invocation.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(90);

static INSTANCES: AtomicU32 = AtomicU32::new(0);

pub struct Containerd {
    /// The instance's temp dir; everything below is removed on Drop.
    pub dir: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
    /// Runtime state: containerd's `state`, runc's root and, unless started with another,
    /// the Stockade shims' state live below (`<dir>/run` on a tmpfs, else `<dir>`).
    pub run_dir: PathBuf,
    /// The gRPC socket.
    pub socket: PathBuf,
    pub config_path: PathBuf,
    pub log_path: PathBuf,
    /// Unique per instance: ctr namespace, cgroup parent (`/<name>`), CNI network name.
    pub name: String,
    /// Linux bridge of the instance's CNI network (deleted on Drop).
    pub bridge: String,
    /// Directory holding containerd-shim-stockade-v1 (first in containerd's PATH).
    pub shim_dir: PathBuf,
    /// The Stockade shims' state directory (`STOCKADE_STATE_DIR` in containerd's
    /// environment; a directory of the instance's own unless started with another).
    pub stockade_state: StateDir,
    binaries: &'static Binaries,
    /// Whether the config registers the Stockade CRI handlers itself.
    stockade_runtimes: bool,
    /// Appended to the generated config.
    extra_config: String,
    config_version: ConfigVersion,
    pub(crate) child: Option<Child>,
    /// Network namespaces of CRI pods (under /run/netns), unmounted on Drop if left.
    pub(crate) netns: Arc<Mutex<Vec<PathBuf>>>,
}

/// How to start a private instance; [`StartOptions::default`] is what most tests use.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// The Stockade shims' state directory (absolute; None: the instance's own).
    pub state_dir: Option<PathBuf>,
    /// Register the CRI handlers `stockade` and `stockade-strict` in the config (off for
    /// tests that register them their own way: deploy/'s snippets, the node installer).
    pub stockade_runtimes: bool,
    /// The config format (None: the one the containerd under test is written for; a 2.x
    /// containerd also reads version 2, as on a node upgraded from 1.x).
    pub config_version: Option<ConfigVersion>,
    /// Appended to the config (whole TOML tables, e.g. another CRI runtime handler for
    /// the benchmark, in the config version of the containerd under test).
    pub extra_config: String,
    /// containerd's root (the snapshotter's data; None: `root` in the instance's dir), e.g.
    /// a test's own filesystem. It must exist; the test removes it.
    pub root: Option<PathBuf>,
    /// Keep the runtime state (containerd's state and bundles, runc's root, the Stockade
    /// shims' state) on a tmpfs of the instance's own, as in /run on a node (the
    /// benchmark); tests keep it on the disk of their temp dir, which also exercises the
    /// state files' syncs.
    pub run_on_tmpfs: bool,
}

impl Default for StartOptions {
    fn default() -> Self {
        StartOptions {
            state_dir: None,
            stockade_runtimes: true,
            config_version: None,
            extra_config: String::new(),
            root: None,
            run_on_tmpfs: false,
        }
    }
}

impl Containerd {
    /// Start a private containerd with runc (default) and Stockade registered, a CNI
    /// network, and the busybox and pause images imported into its own ctr namespace
    /// ([`Containerd::namespace`]) and into `k8s.io`.
    pub fn start() -> Result<Containerd> {
        Containerd::start_with(StartOptions::default())
    }

    /// [`Containerd::start`], with the Stockade shims keeping their state in `state_dir`
    /// (an absolute path; None: a directory of the instance's own).
    pub fn start_with_state_dir(state_dir: Option<&Path>) -> Result<Containerd> {
        Containerd::start_with(StartOptions {
            state_dir: state_dir.map(Path::to_path_buf),
            ..StartOptions::default()
        })
    }

    /// Start a private instance of the containerd under test ([`Binaries::get`]).
    pub fn start_with(options: StartOptions) -> Result<Containerd> {
        let binaries = Binaries::get()?;
        for tool in ["runc", "ip"] {
            paths::require_tool(tool)?;
        }
        for plugin in ["bridge", "host-local", "loopback"] {
            if !Path::new(CNI_BIN_DIR).join(plugin).is_file() {
                bail!(
                    "CNI plugin {CNI_BIN_DIR}/{plugin} missing: \
                     apt-get install containernetworking-plugins"
                );
            }
        }
        if !nix::unistd::geteuid().is_root() {
            bail!("the integration tests need root (they start containerd)");
        }
        let shim_dir = paths::shim_dir()?;
        let n = INSTANCES.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let name = format!("stockade-it-{pid}-{n}");
        // Interface names are limited to 15 bytes.
        let bridge = format!("stkit{:x}x{:x}", pid, n);
        let dir = tempfile::Builder::new()
            .prefix(&format!("{name}-"))
            .tempdir_in("/tmp")
            .context("creating the instance's temp dir")?
            .keep();
        // Searchable, not readable, by others (like /run/containerd): the containers'
        // unprivileged host root must traverse it to reach bundles and netns mounts.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))
            .with_context(|| format!("chmod 0711 {}", dir.display()))?;
        // The instance's own node state (ID ranges, records): tests never share the
        // node's /run/stockade, nor with other checkouts' builds.
        // Tests keep the layout they always had: everything directly in the dir.
        let run_dir = if options.run_on_tmpfs {
            dir.join("run")
        } else {
            dir.clone()
        };
        let stockade_state = match &options.state_dir {
            Some(dir) => StateDir::new(dir)?,
            None => StateDir::new(run_dir.join("stockade"))?,
        };
        let mut c = Containerd {
            root: options.root.clone().unwrap_or_else(|| dir.join("root")),
            state: run_dir.join("state"),
            run_dir,
            socket: dir.join("containerd.sock"),
            config_path: dir.join("config.toml"),
            log_path: dir.join("containerd.log"),
            dir,
            name,
            bridge,
            shim_dir,
            stockade_state,
            binaries,
            stockade_runtimes: options.stockade_runtimes,
            extra_config: options.extra_config.clone(),
            config_version: options
                .config_version
                .unwrap_or_else(|| binaries.config_version()),
            child: None,
            netns: Arc::new(Mutex::new(Vec::new())),
        };
        // From here on, Drop cleans up whatever fails.
        c.write_files()?;
        c.spawn_daemon()?;
        c.import_images()?;
        Ok(c)
    }

    /// The format of this instance's config file.
    pub fn config_version(&self) -> ConfigVersion {
        self.config_version
    }

    /// The containerd binaries this instance runs.
    pub fn binaries(&self) -> &'static Binaries {
        self.binaries
    }

    /// The ctr namespace of this instance (for `ctr` tests).
    pub fn namespace(&self) -> &str {
        &self.name
    }

    /// Absolute cgroup parent of every container of this instance.
    pub fn cgroup_parent(&self) -> String {
        format!("/{}", self.name)
    }

    /// PID of the running containerd, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn write_files(&self) -> Result<()> {
        // A run dir of its own is the instance's tmpfs ([`StartOptions::run_on_tmpfs`]).
        if self.run_dir != self.dir {
            std::fs::create_dir(&self.run_dir)
                .with_context(|| format!("creating {}", self.run_dir.display()))?;
            // Traversable, not readable, like the instance's dir; unmounted on teardown
            // with everything else below the dir.
            nix::mount::mount(
                Some("tmpfs"),
                &self.run_dir,
                Some("tmpfs"),
                nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
                Some("mode=0711,size=4g"),
            )
            .with_context(|| format!("mounting a tmpfs on {}", self.run_dir.display()))?;
        }
        for d in [&self.root, &self.state] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        let cni_conf_dir = self.dir.join("cni/net.d");
        std::fs::create_dir_all(&cni_conf_dir)?;
        let cni = serde_json::json!({
            "cniVersion": "0.4.0",
            "name": self.name,
            "plugins": [{
                "type": "bridge",
                "bridge": self.bridge,
                // No address on the bridge: no host routes, no forwarding sysctl.
                "isGateway": false,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": "10.234.0.0/16"}]],
                    "dataDir": self.dir.join("cni/ipam"),
                },
            }],
        });
        std::fs::write(
            cni_conf_dir.join("10-stockade-it.conflist"),
            serde_json::to_vec_pretty(&cni)?,
        )?;
        std::fs::write(&self.config_path, self.config_toml())
            .with_context(|| format!("writing {}", self.config_path.display()))?;
        Ok(())
    }

    /// What this instance's config names.
    pub fn instance_config(&self) -> InstanceConfig {
        InstanceConfig {
            dir: self.dir.clone(),
            root: self.root.clone(),
            state: self.state.clone(),
            runc_root: self.run_dir.join("runc"),
            socket: self.socket.clone(),
            profiles: paths::profiles_dir(),
            stockade_runtimes: self.stockade_runtimes,
        }
    }

    /// containerd config of this instance, in the format of the containerd under test.
    pub fn config_toml(&self) -> String {
        self.instance_config().render(self.config_version) + &self.extra_config
    }

    fn spawn_daemon(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![self.shim_dir.clone()];
        dirs.extend(self.binaries.path_dirs());
        dirs.extend(std::env::split_paths(&path));
        let child = Command::new(self.binaries.containerd())
            // Own process group: a Ctrl-C at the terminal must not kill it before the
            // harness has cleaned up.
            .process_group(0)
            .arg("--config")
            .arg(&self.config_path)
            .env("PATH", std::env::join_paths(dirs)?)
            .env("RUST_BACKTRACE", "1")
            .env(state_dir::ENV, self.stockade_state.root())
            // The shim's profile when a client names none (e.g. `ctr run` without
            // --runtime-config-path); containerd passes its environment to shims.
            .env(
                "STOCKADE_PROFILE",
                paths::profiles_dir().join("default.toml"),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting containerd")?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Some(status) = child.try_wait()? {
                    self.child = None;
                    bail!(
                        "containerd exited during start ({status}); log:\n{}",
                        self.log_tail(40)
                    );
                }
            }
            let plugins = self.ctr_in("default", &["plugins", "ls"]);
            if plugins.status.success() {
                let text = String::from_utf8_lossy(&plugins.stdout);
                let cri = text
                    .lines()
                    .find(|l| l.contains("io.containerd.grpc.v1") && l.contains(" cri "));
                match cri {
                    Some(line) if line.trim_end().ends_with("ok") => return Ok(()),
                    Some(line) => bail!(
                        "containerd's CRI plugin did not load: {line}\nlog:\n{}",
                        self.log_tail(40)
                    ),
                    None => {}
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd did not become ready; log:\n{}",
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn import_images(&self) -> Result<()> {
        let archive = self.dir.join("test-images.tar");
        write_test_images_archive(&archive)?;
        let archive = archive.display().to_string();
        for ns in [self.name.as_str(), CRI_NAMESPACE] {
            let out = self.ctr_in(ns, &["images", "import", &archive]);
            if !out.status.success() {
                bail!(
                    "ctr -n {ns} images import failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
        Ok(())
    }

    /// The last `n` lines of containerd's log.
    pub fn log_tail(&self, n: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// A failed test's whole containerd log (the shims' logs are in it) copied to
    /// `$STOCKADE_KEEP_LOGS/<name>.log`, where that is set: the temp dir goes with the test,
    /// and CI shows only the last lines.
    fn keep_log(&self) {
        let Some(dir) = std::env::var_os("STOCKADE_KEEP_LOGS") else {
            return;
        };
        let kept = PathBuf::from(dir).join(format!("{}.log", self.name));
        match std::fs::copy(&self.log_path, &kept) {
            Ok(_) => eprintln!("[harness] containerd log kept at {}", kept.display()),
            Err(e) => eprintln!("[harness] keeping the log at {}: {e}", kept.display()),
        }
    }

    /// Stop containerd by its PID (SIGTERM, then SIGKILL), leaving shims and containers.
    pub fn stop_daemon(&mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(child.id() as i32);
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if child.try_wait()?.is_some() {
                return Ok(());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                child.wait()?;
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stop containerd and start it again with the same config and directories.
    pub fn restart(&mut self) -> Result<()> {
        self.stop_daemon()?;
        self.spawn_daemon()
    }

    /// Wait until containerd exits by itself (e.g. stopped by a script given its PID),
    /// as a service manager would see it; errors after `timeout`.
    pub fn wait_daemon_exit(&mut self, timeout: Duration) -> Result<std::process::ExitStatus> {
        let Some(child) = self.child.as_mut() else {
            bail!("containerd of {} is not running", self.name);
        };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait()? {
                self.child = None;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!(
                    "containerd (pid {}) still runs after {timeout:?}",
                    child.id()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Start containerd again after it stopped, with the same directories and whatever
    /// its config file now says (and [`Containerd::shim_dir`] first on its PATH).
    pub fn start_daemon(&mut self) -> Result<()> {
        if let Some(pid) = self.pid() {
            bail!("containerd of {} already runs (pid {pid})", self.name);
        }
        self.spawn_daemon()
    }

    pub(crate) fn ctr_command(&self, ns: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new(self.binaries.ctr());
        cmd.arg("--address")
            .arg(&self.socket)
            .arg("--namespace")
            .arg(ns)
            .args(args);
        cmd
    }

    /// `ctr` against this containerd in namespace `ns`, killed after [`CTR_TIMEOUT`].
    pub fn ctr_in(&self, ns: &str, args: &[&str]) -> Output {
        let mut cmd = self.ctr_command(ns, args);
        output_with_timeout(&mut cmd, CTR_TIMEOUT).unwrap_or_else(|e| Output {
            status: std::os::unix::process::ExitStatusExt::from_raw(127 << 8),
            stdout: Vec::new(),
            stderr: format!("[harness] could not run ctr: {e:#}").into_bytes(),
        })
    }

    /// `ctr` against this containerd in this instance's own namespace.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_in(&self.name, args)
    }

    /// `ctr` that must succeed: its stdout, or an error with its stderr.
    pub fn ctr_ok(&self, args: &[&str]) -> Result<String> {
        let out = self.ctr(args);
        if !out.status.success() {
            bail!(
                "ctr {} failed ({}): {}{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// PID and status (RUNNING, PAUSED, STOPPED, ...) of task `id`, from `ctr tasks ls`.
    pub fn task(&self, id: &str) -> Result<(i32, String)> {
        let out = self.ctr_ok(&["tasks", "ls"])?;
        for line in out.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            if let [task, pid, status, ..] = cols[..] {
                if task == id {
                    let pid = pid
                        .parse()
                        .with_context(|| format!("bad pid in {line:?}"))?;
                    return Ok((pid, status.to_string()));
                }
            }
        }
        bail!("no task {id} in ctr tasks ls:\n{out}")
    }

    /// Wait until task `id` has `status`.
    pub fn wait_task_status(&self, id: &str, status: &str) -> Result<()> {
        wait_for(
            &format!("task {id} to be {status}"),
            Duration::from_secs(60),
            || self.task(id).ok().filter(|(_, s)| s == status),
        )
        .map(|_| ())
    }

    /// `ctr` under a pseudo-terminal (for `-t`), in this instance's namespace.
    pub fn ctr_tty(&self, args: &[&str]) -> Result<TtyOutput> {
        let mut cmd = self.ctr_command(&self.name, args);
        tty_output_with_timeout(&mut cmd, CTR_TIMEOUT)
    }

    /// A long-running `ctr` (e.g. `events`) with piped stdout; the caller kills it.
    pub fn spawn_ctr(&self, args: &[&str]) -> Result<Child> {
        self.ctr_command(&self.name, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawning ctr")
    }

    /// A CRI client on this containerd, once its CRI plugin sees the pause image.
    pub fn cri(&self) -> Result<Cri> {
        let cri = Cri::connect(
            &self.socket,
            self.dir.join("pods"),
            self.cgroup_parent(),
            Arc::clone(&self.netns),
        )?;
        // ctr's import reaches the CRI image cache through an event: wait for it.
        wait_for(
            "the CRI plugin to see the test images",
            Duration::from_secs(30),
            || cri.image_present(PAUSE_IMAGE).ok().filter(|p| *p),
        )?;
        Ok(cri)
    }

    /// Host cgroup directories of this instance (`/<name>` in every hierarchy).
    pub fn cgroup_dirs(&self) -> Vec<PathBuf> {
        teardown::cgroup_dirs(&self.cgroup_parent())
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- containerd log ({}), last lines ----\n{}\n----",
                self.name,
                self.log_tail(40)
            );
            self.keep_log();
        }
        let problems = self.teardown();
        if !problems.is_empty() {
            eprintln!(
                "[harness] teardown of {} incomplete: {problems:?}",
                self.name
            );
        }
    }
}
