//! A private containerd for one test: its own config, root, state, sockets, CNI network
//! and images in a temp dir. Stopped by PID, and everything it created removed, on Drop
//! (also when the test panics).

use crate::cri::Cri;
use crate::exec::{output_with_timeout, tty_output_with_timeout, wait_for, TtyOutput};
use crate::image::{write_test_images_archive, PAUSE_IMAGE};
use crate::paths;
use crate::teardown;
use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::fmt::Write as _;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use stockade_runtime::idrange::IdAllocator;
use stockade_runtime::profile::IdPoolSettings;
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
pub const HANDLER_RUNC: &str = "runc";

const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// Deadline for one `ctr` invocation.
pub const CTR_TIMEOUT: Duration = Duration::from_secs(90);

static INSTANCES: AtomicU32 = AtomicU32::new(0);

/// Processes, mounts, cgroups and state an instance still has (see [`Containerd::leftovers`]).
#[derive(Debug, Default)]
pub struct Leftovers {
    pub processes: Vec<String>,
    pub mounts: Vec<PathBuf>,
    pub cgroups: Vec<PathBuf>,
    /// containerd's task bundles, Stockade's libcontainer state dirs, shim sockets.
    pub task_dirs: Vec<PathBuf>,
    /// Pods of this instance that still hold a host ID range.
    pub id_ranges: Vec<String>,
    /// Node state records (for the exporter) of this instance's containers.
    pub node_records: Vec<PathBuf>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty()
            && self.mounts.is_empty()
            && self.cgroups.is_empty()
            && self.task_dirs.is_empty()
            && self.id_ranges.is_empty()
            && self.node_records.is_empty()
    }
}

pub struct Containerd {
    /// The instance's temp dir; everything below is removed on Drop.
    pub dir: PathBuf,
    pub root: PathBuf,
    pub state: PathBuf,
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
    /// environment; /run/stockade unless the instance was started with another).
    pub stockade_state: StateDir,
    /// Appended to the generated config.
    extra_config: String,
    child: Option<Child>,
    /// Network namespaces of CRI pods (under /run/netns), unmounted on Drop if left.
    netns: Arc<Mutex<Vec<PathBuf>>>,
}

fn toml_str(p: &Path) -> String {
    // Paths here are ours (no quotes or backslashes); Debug gives a TOML-compatible string.
    format!("{:?}", p.display().to_string())
}

impl Containerd {
    /// Start a private containerd with runc (default) and Stockade registered, a CNI
    /// network, and the busybox and pause images imported into its own ctr namespace
    /// ([`Containerd::namespace`]) and into `k8s.io`.
    pub fn start() -> Result<Containerd> {
        Containerd::start_with_state_dir(None)
    }

    /// [`Containerd::start`], with the Stockade shims keeping their state in `state_dir`
    /// (an absolute path; None: a directory of the instance's own).
    pub fn start_with_state_dir(state_dir: Option<&Path>) -> Result<Containerd> {
        Containerd::start_with(state_dir, "")
    }

    /// [`Containerd::start_with_state_dir`], with `extra_config` appended to the config
    /// (whole TOML tables, e.g. another CRI runtime handler for the benchmark).
    pub fn start_with(state_dir: Option<&Path>, extra_config: &str) -> Result<Containerd> {
        for tool in ["containerd", "ctr", "runc", "ip"] {
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
        // The instance's own node state (ID ranges, records): tests never share the
        // node's /run/stockade, nor with other checkouts' builds.
        let stockade_state = match state_dir {
            Some(dir) => StateDir::new(dir)?,
            None => StateDir::new(dir.join("stockade"))?,
        };
        let mut c = Containerd {
            root: dir.join("root"),
            state: dir.join("state"),
            socket: dir.join("containerd.sock"),
            config_path: dir.join("config.toml"),
            log_path: dir.join("containerd.log"),
            dir,
            name,
            bridge,
            shim_dir,
            stockade_state,
            extra_config: extra_config.to_string(),
            child: None,
            netns: Arc::new(Mutex::new(Vec::new())),
        };
        // From here on, Drop cleans up whatever fails.
        c.write_files()?;
        c.spawn_daemon()?;
        c.import_images()?;
        Ok(c)
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

    /// containerd config (version 2) of this instance.
    pub fn config_toml(&self) -> String {
        let profiles = paths::profiles_dir();
        let cri = r#"plugins."io.containerd.grpc.v1.cri""#;
        let mut s = String::new();
        let _ = write!(
            s,
            r#"version = 2
root = {root}
state = {state}
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]

[grpc]
  address = {socket}

[ttrpc]
  address = {ttrpc}

[debug]
  level = "debug"

[plugins."io.containerd.internal.v1.opt"]
  path = {opt}

[{cri}]
  sandbox_image = "{pause}"
  # Root here lacks CAP_SYS_RESOURCE: without this every sandbox fails to start.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true

[{cri}.containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "runc"

[{cri}.containerd.runtimes.runc]
  runtime_type = "{runc}"
  {passthrough}

[{cri}.containerd.runtimes.runc.options]
  Root = {runc_root}
  SystemdCgroup = false

[{cri}.containerd.runtimes.stockade]
  runtime_type = "{stockade}"
  {passthrough}

[{cri}.containerd.runtimes.stockade.options]
  ConfigPath = {default_profile}

[{cri}.containerd.runtimes.stockade-strict]
  runtime_type = "{stockade}"
  {passthrough}

[{cri}.containerd.runtimes.stockade-strict.options]
  ConfigPath = {strict_profile}

[{cri}.cni]
  bin_dir = "{cni_bin}"
  conf_dir = {cni_conf}
  max_conf_num = 1
"#,
            root = toml_str(&self.root),
            state = toml_str(&self.state),
            socket = toml_str(&self.socket),
            ttrpc = toml_str(&self.dir.join("containerd.sock.ttrpc")),
            opt = toml_str(&self.dir.join("opt")),
            pause = PAUSE_IMAGE,
            runc = RUNC_RUNTIME,
            runc_root = toml_str(&self.dir.join("runc")),
            stockade = STOCKADE_RUNTIME,
            default_profile = toml_str(&profiles.join("default.toml")),
            strict_profile = toml_str(&profiles.join("strict.toml")),
            cni_bin = CNI_BIN_DIR,
            // Every pod and container annotation reaches the spec (the worst case an
            // operator can configure): the security suite checks that none of them
            // changes a decision.
            passthrough = "pod_annotations = [\"*\"]\n  container_annotations = [\"*\"]",
            cni_conf = toml_str(&self.dir.join("cni/net.d")),
        );
        s.push_str(&self.extra_config);
        s
    }

    fn spawn_daemon(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![self.shim_dir.clone()];
        dirs.extend(std::env::split_paths(&path));
        let child = Command::new("containerd")
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

    fn ctr_command(&self, ns: &str, args: &[&str]) -> Command {
        let mut cmd = Command::new("ctr");
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

    /// What this instance has beyond containerd itself: processes other than containerd,
    /// mounts under its root and state, cgroups below its parent, shim task dirs.
    pub fn leftovers(&self) -> Leftovers {
        let marker = self.dir.display().to_string();
        let daemon = self.pid().map(|p| p as i32);
        let processes = teardown::instance_processes(&marker, &self.cgroup_dirs())
            .into_iter()
            .filter(|p| Some(p.pid) != daemon)
            // Our own ctr clients, if any are running, are not leftovers.
            .filter(|p| p.args.first().is_none_or(|a| !a.ends_with("ctr")))
            .map(|p| format!("{} {}", p.pid, p.args.join(" ")))
            .collect();
        let mut mounts = teardown::mounts_under(&self.root);
        mounts.extend(teardown::mounts_under(&self.state));
        let cgroups = self
            .cgroup_dirs()
            .iter()
            .flat_map(|d| teardown::cgroup_tree(d).into_iter().skip(1))
            .collect();
        let mut task_dirs = Vec::new();
        for ns in [self.name.as_str(), CRI_NAMESPACE] {
            let d = self.state.join("io.containerd.runtime.v2.task").join(ns);
            if let Ok(entries) = std::fs::read_dir(&d) {
                task_dirs.extend(entries.flatten().map(|e| e.path()));
            }
        }
        task_dirs.extend(self.shim_state_dirs());
        task_dirs.extend(self.shim_sockets());
        let ids = self.logged_ids();
        // Only reading the table: any pool will do.
        let any_pool = IdPoolSettings {
            first_id: 1 << 30,
            size: 1 << 16,
            ids_per_pod: 1 << 16,
        };
        let id_ranges = IdAllocator::open(self.stockade_state.id_ranges(), any_pool)
            .and_then(|allocator| allocator.table())
            .map(|table| {
                table
                    .iter()
                    .map(|(pod, _)| pod.to_string())
                    .filter(|pod| ids.contains(pod))
                    .collect()
            })
            .unwrap_or_default();
        let node_records = ids
            .iter()
            .map(|id| self.stockade_state.containers().join(format!("{id}.json")))
            .filter(|p| p.exists())
            .collect();
        Leftovers {
            processes,
            mounts,
            cgroups,
            task_dirs,
            id_ranges,
            node_records,
        }
    }

    /// Container ids this containerd has logged (CRI's 64-hex ids and ctr's `id=` names).
    fn logged_ids(&self) -> std::collections::BTreeSet<String> {
        let log = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let mut ids: std::collections::BTreeSet<String> = log
            .split(|c: char| !c.is_ascii_hexdigit())
            .filter(|t| t.len() == 64)
            .map(str::to_string)
            .collect();
        // Bundle paths name the id: .../io.containerd.runtime.v2.task/<ns>/<id>.
        for part in log.split("io.containerd.runtime.v2.task/").skip(1) {
            if let Some(id) = part
                .split(|c: char| c == '"' || c.is_whitespace())
                .next()
                .and_then(|p| p.split('/').nth(1))
                .filter(|id| !id.is_empty())
            {
                ids.insert(id.to_string());
            }
        }
        for part in log.split(" id=").skip(1) {
            let id = part
                .trim_start_matches('"')
                .split(|c: char| c == '"' || c.is_whitespace())
                .next()
                .unwrap_or("");
            if !id.is_empty() {
                ids.insert(id.to_string());
            }
        }
        ids
    }

    /// Shim sockets (in /run/containerd/s, named by a hash of our address, namespace and
    /// container id) that still exist for containers of this instance.
    pub fn shim_sockets(&self) -> Vec<PathBuf> {
        let ids = self.logged_ids();
        let mut found = Vec::new();
        for ns in [self.name.as_str(), CRI_NAMESPACE] {
            for id in &ids {
                let path = shim_socket_path(&self.socket, ns, id);
                if path.exists() {
                    found.push(path);
                }
            }
        }
        found
    }

    /// Stockade's libcontainer state dirs of this instance's containers. Its ctr
    /// namespace is ours alone; in k8s.io only the IDs our containerd logged are ours.
    pub fn shim_state_dirs(&self) -> Vec<PathBuf> {
        let root = self.stockade_state.libcontainer();
        let mut dirs = Vec::new();
        if let Ok(entries) = std::fs::read_dir(root.join(&self.name)) {
            dirs.extend(entries.flatten().map(|e| e.path()));
        }
        for id in self.logged_ids().iter().filter(|id| id.len() == 64) {
            let d = root.join(CRI_NAMESPACE).join(id);
            if d.exists() {
                dirs.push(d);
            }
        }
        dirs
    }

    /// Best effort: remove CRI pods and ctr containers through containerd itself, with
    /// short deadlines (a hung shim must not hang the teardown; the forced path follows).
    fn graceful_cleanup(&self) {
        const QUICK: Duration = Duration::from_secs(20);
        let ctr = |args: &[&str]| -> Option<String> {
            let mut cmd = self.ctr_command(&self.name, args);
            output_with_timeout(&mut cmd, QUICK)
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        };
        if let Ok(cri) = Cri::connect(
            &self.socket,
            self.dir.join("pods"),
            self.cgroup_parent(),
            Arc::clone(&self.netns),
        ) {
            let cri = cri.with_timeout(QUICK);
            if let Ok(pods) = cri.list_pod_sandboxes() {
                for pod in pods {
                    let _ = cri.stop_pod_sandbox(&pod.id);
                    let _ = cri.remove_pod_sandbox(&pod.id);
                }
            }
        }
        if let Some(tasks) = ctr(&["tasks", "ls", "-q"]) {
            for id in tasks.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let _ = ctr(&["tasks", "rm", "-f", id]);
            }
        }
        if let Some(containers) = ctr(&["containers", "ls", "-q"]) {
            for id in containers.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let _ = ctr(&["containers", "rm", id]);
            }
        }
    }

    /// Stop everything this instance started and remove what it created; returns a
    /// description of anything that could not be removed.
    fn teardown(&mut self) -> Vec<String> {
        let mut problems = Vec::new();
        if self.child.is_some() {
            self.graceful_cleanup();
        }
        if let Err(e) = self.stop_daemon() {
            problems.push(format!("stopping containerd: {e:#}"));
        }
        let cgroup_dirs = self.cgroup_dirs();
        teardown::thaw(&cgroup_dirs);
        let marker = self.dir.display().to_string();
        let procs = teardown::instance_processes(&marker, &cgroup_dirs);
        let pids: Vec<i32> = procs.iter().map(|p| p.pid).collect();
        let alive = teardown::kill_and_wait(&pids, Duration::from_secs(10));
        if !alive.is_empty() {
            problems.push(format!("processes still alive: {alive:?}"));
        }
        // Shim sockets live in /run/containerd/s, named by a hash of our address.
        for p in &procs {
            self.remove_shim_socket(&p.args);
        }
        if let Ok(mut netns) = self.netns.lock() {
            for ns in netns.drain(..) {
                // CRI names them under /var/run, mountinfo under /run: unmount whatever
                // the path is; a pod removed through CRI has no file left anyway.
                if ns.exists() {
                    let _ = nix::mount::umount2(&ns, nix::mount::MntFlags::MNT_DETACH);
                    let _ = std::fs::remove_file(&ns);
                    if ns.exists() {
                        problems.push(format!("network namespace {} left", ns.display()));
                    }
                }
            }
        }
        let still_mounted = teardown::unmount_under(&self.dir);
        if !still_mounted.is_empty() {
            problems.push(format!("still mounted: {still_mounted:?}"));
        }
        for sock in self.shim_sockets() {
            let _ = std::fs::remove_file(sock);
        }
        for d in self.shim_state_dirs() {
            let _ = std::fs::remove_dir_all(d);
        }
        let _ = std::fs::remove_dir(self.stockade_state.libcontainer().join(&self.name));
        let cgroups = teardown::remove_cgroups(&cgroup_dirs, Duration::from_secs(10));
        if !cgroups.is_empty() {
            problems.push(format!("cgroups left: {cgroups:?}"));
        }
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            let _ = output_with_timeout(
                Command::new("ip").args(["link", "del", &self.bridge]),
                Duration::from_secs(10),
            );
        }
        // libcni caches results per network name (ours is unique) in /var/lib/cni.
        if let Ok(entries) = std::fs::read_dir("/var/lib/cni/results") {
            let prefix = format!("{}-", self.name);
            for e in entries.flatten() {
                let file = e.file_name().to_string_lossy().into_owned();
                // <network>-<sandbox id>-<ifname>; the pod's loopback result goes too.
                if let Some(rest) = file.strip_prefix(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                    if let Some((sandbox, _)) = rest.rsplit_once('-') {
                        let lo = format!("cni-loopback-{sandbox}-lo");
                        let _ = std::fs::remove_file(Path::new("/var/lib/cni/results").join(lo));
                    }
                }
            }
        }
        // runc's default root for containers started by ctr is namespaced by our name.
        let _ = std::fs::remove_dir_all(Path::new("/run/containerd/runc").join(&self.name));
        if still_mounted.is_empty() {
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                problems.push(format!("removing {}: {e}", self.dir.display()));
            }
        }
        problems
    }

    fn remove_shim_socket(&self, args: &[String]) {
        let (Some(ns), Some(id), Some(addr)) = (
            teardown::arg_value(args, "-namespace"),
            teardown::arg_value(args, "-id"),
            teardown::arg_value(args, "-address"),
        ) else {
            return;
        };
        if Path::new(addr) == self.socket {
            let _ = std::fs::remove_file(shim_socket_path(&self.socket, ns, id));
        }
    }
}

/// containerd 1.6 (and the Rust shim crate) put a shim's socket at
/// /run/containerd/s/sha256(<containerd address>/<namespace>/<id>).
pub fn shim_socket_path(address: &Path, namespace: &str, id: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let key = address.join(namespace).join(id);
    let hash = Sha256::digest(key.display().to_string().as_bytes());
    Path::new("/run/containerd/s").join(format!("{hash:x}"))
}

impl Drop for Containerd {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "---- containerd log ({}), last lines ----\n{}\n----",
                self.name,
                self.log_tail(40)
            );
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
