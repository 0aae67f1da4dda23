//! libcontainer glue: create, start, exec, kill, delete, pause, resume, rootfs mounts.
//!
//! These functions clone and `chdir`, so they run only in the single-threaded zygote (or
//! in the short-lived `delete` action, which never starts tokio).

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use libcontainer::capabilities::drop_privileges;
use libcontainer::config::YoukiConfig;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container;
use libcontainer::error::LibcontainerError;
use libcontainer::signal::Signal;
use libcontainer::syscall::syscall::{create_syscall, SyscallType};
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::sched::CloneFlags;
use nix::unistd::{Gid, Uid};
use serde::{Deserialize, Serialize};
use stockade_runtime::hardener::{PlannedVolume, VolumeKind};
use stockade_runtime::idrange::IdRange;
use stockade_runtime::oci_spec::runtime::{
    LinuxCapabilities, LinuxSeccomp, Process as OciProcess, Spec, User,
};
use stockade_runtime::rootfs;
use stockade_runtime::seccomp::{self, CompiledFilter};

use super::lean_ns;
use super::RootfsMount;

/// The seccomp filters of one container, in install order (the profile's default, then
/// the pod's own), written next to the bundle's config.json by the shim.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FilterPlan {
    pub filters: Vec<LinuxSeccomp>,
    pub log_denials: bool,
}

/// Installs the compiled filters as the very last step in the container process, after
/// libcontainer's pivot_root, setuid and capability drop, then execs the workload.
#[derive(Clone)]
struct SeccompExecutor {
    filters: Vec<CompiledFilter>,
    log_denials: bool,
    join: Option<JoinUserns>,
}

/// libcontainer 0.7 starts exec processes ("tenants") in every namespace of the container
/// except its user namespace: they would run as host root. So the shim has libcontainer
/// run the tenant as root up to the executor, which then enters the pod's user namespace
/// (allowed: host root owns it), becomes the process's user and sets its capabilities.
#[derive(Clone)]
struct JoinUserns {
    /// The container's user namespace, opened by the zygote and inherited through clone.
    fd: RawFd,
    user: User,
    capabilities: LinuxCapabilities,
}

impl JoinUserns {
    fn apply(&self) -> Result<(), ExecutorError> {
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            ExecutorError::Other(format!("exec process: {what}: {e}"))
        };
        let sys = create_syscall();
        sys.set_ns(self.fd, CloneFlags::CLONE_NEWUSER)
            .map_err(|e| fail("entering the pod's user namespace", &e))?;
        // Full capabilities inside the namespace now: become the process's user, keeping
        // them just long enough to set exactly the hardened sets.
        let groups: Vec<Gid> = self
            .user
            .additional_gids()
            .iter()
            .flatten()
            .map(|g| Gid::from_raw(*g))
            .collect();
        sys.set_groups(&groups)
            .map_err(|e| fail("setting supplementary groups", &e))?;
        sys.set_id(
            Uid::from_raw(self.user.uid()),
            Gid::from_raw(self.user.gid()),
        )
        .map_err(|e| fail("setting uid/gid", &e))?;
        drop_privileges(&self.capabilities, sys.as_ref())
            .map_err(|e| fail("setting capabilities", &e))?;
        // SAFETY: prctl with integer arguments only.
        unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 0, 0, 0, 0) };
        Ok(())
    }
}

impl Executor for SeccompExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        if let Some(join) = &self.join {
            join.apply()?;
        }
        for filter in &self.filters {
            filter
                .install(self.log_denials)
                .map_err(|e| ExecutorError::Other(format!("installing seccomp filter: {e}")))?;
        }
        DefaultExecutor {}.exec(spec)
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        DefaultExecutor {}.validate(spec)
    }
}

/// Compiled filters by the text of the plan they came from: a pod's containers and exec
/// processes share their plan's text, and parsing and compiling it take longer than the
/// rest of an exec's setup. The zygote is single-threaded and serves one pod: a handful of
/// plans at the most.
static COMPILED: std::sync::Mutex<Vec<(Vec<u8>, SeccompExecutor)>> =
    std::sync::Mutex::new(Vec::new());
const COMPILED_KEPT: usize = 8;

fn load_executor(plan_path: &Path) -> anyhow::Result<SeccompExecutor> {
    let text =
        std::fs::read(plan_path).with_context(|| format!("reading {}", plan_path.display()))?;
    let cached = COMPILED.lock().ok().and_then(|c| {
        c.iter()
            .find(|(key, _)| *key == text)
            .map(|(_, executor)| executor.clone())
    });
    if let Some(executor) = cached {
        return Ok(executor);
    }
    let plan: FilterPlan = serde_json::from_slice(&text)
        .with_context(|| format!("parsing {}", plan_path.display()))?;
    let filters = plan
        .filters
        .iter()
        .enumerate()
        .map(|(i, f)| seccomp::compile(f).with_context(|| format!("compiling seccomp filter {i}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if filters.is_empty() {
        return Err(anyhow!("the seccomp plan has no filter"));
    }
    let executor = SeccompExecutor {
        filters,
        log_denials: plan.log_denials,
        join: None,
    };
    if let Ok(mut c) = COMPILED.lock() {
        if c.len() >= COMPILED_KEPT {
            c.remove(0);
        }
        c.push((text, executor.clone()));
    }
    Ok(executor)
}

/// libcontainer's errors hide their cause in `source()`: keep the whole chain.
fn lc(e: LibcontainerError) -> anyhow::Error {
    let mut msg = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(s) = src {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        src = s.source();
    }
    anyhow!(msg)
}

fn builder(
    id: &str,
    root: &Path,
    console_socket: Option<PathBuf>,
    executor: SeccompExecutor,
    stdio: [Option<OwnedFd>; 3],
) -> anyhow::Result<ContainerBuilder> {
    let mut b = ContainerBuilder::new(id.to_string(), SyscallType::default())
        .validate_id()
        .map_err(lc)?
        .with_root_path(root)
        .map_err(lc)?
        .with_executor(executor)
        .with_console_socket(console_socket);
    let [stdin, stdout, stderr] = stdio;
    if let Some(fd) = stdin {
        b = b.with_stdin(fd);
    }
    if let Some(fd) = stdout {
        b = b.with_stdout(fd);
    }
    if let Some(fd) = stderr {
        b = b.with_stderr(fd);
    }
    Ok(b)
}

/// Run `f` with the calling (single-threaded) process in the network namespace `netns`,
/// then return to the original one.
///
/// A container in a user namespace cannot `setns` into a network namespace owned by the
/// host's user namespace (CRI creates the pod's netns there): libcontainer enters the new
/// user namespace first and then gets EPERM. So the zygote, which has the privilege,
/// enters the netns itself and the container inherits it through clone (its spec then
/// names no network namespace path).
fn in_netns<T>(netns: Option<&Path>, f: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<T> {
    let Some(netns) = netns else {
        return f();
    };
    let own = std::fs::File::open("/proc/thread-self/ns/net")
        .context("opening the zygote's network namespace")?;
    let target = std::fs::File::open(netns)
        .with_context(|| format!("opening network namespace {}", netns.display()))?;
    nix::sched::setns(&target, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("entering network namespace {}", netns.display()))?;
    let result = f();
    if let Err(e) = nix::sched::setns(&own, nix::sched::CloneFlags::CLONE_NEWNET) {
        // Never create another container in the wrong namespace.
        tracing::error!(error = %e, "cannot return to the zygote's network namespace");
        std::process::exit(1);
    }
    result
}

/// What is left of a Create once its answer is sent: the zygote runs it before it reads
/// its next request, so the shim's next step for the container (Start, Delete) finds it
/// done, and the Create's answer does not wait for it.
#[must_use = "the staged volumes stay mounted on the node until it runs"]
pub struct AfterCreate {
    /// The zygote is still in the kept mount namespace (see [`lean_ns::run_staying`]).
    stay: lean_ns::Stay,
    bundle: PathBuf,
}

impl AfterCreate {
    /// libcontainer returned once the init reported ready, i.e. after it bound the staged
    /// volumes into its rootfs and pivoted into it: its mount namespace holds its own
    /// mounts of them now. Kept in the node's namespace, a staged clone of a source with
    /// submounts would keep those directories busy on the host for the container's life
    /// (rmdir: EBUSY once the host unmounted them), and every staged mount lengthens the
    /// node's mount table, which every mountinfo read walks.
    pub fn run(self) {
        // Unstaging works on the node's mounts: back in its namespace first.
        self.stay.end();
        crate::binds::unstage(&self.bundle);
    }
}

/// Create the container from the (already hardened) bundle; returns the init pid and
/// what must still be done (soon, but not before answering: see [`AfterCreate`]).
/// `netns`: the network namespace the container inherits (see [`in_netns`]), where
/// `sysctls` are written first.
#[allow(clippy::too_many_arguments)]
pub fn create(
    id: &str,
    root: &Path,
    bundle: &Path,
    console_socket: Option<PathBuf>,
    seccomp: &Path,
    stdio: [Option<OwnedFd>; 3],
    netns: Option<&Path>,
    sysctls: &BTreeMap<String, String>,
) -> anyhow::Result<(i32, AfterCreate)> {
    std::fs::create_dir_all(root).with_context(|| format!("creating {}", root.display()))?;
    let spec = stockade_runtime::spec::load(&bundle.join("config.json"))?;
    let needed = lean_ns::needed_paths(&spec, bundle, root, netns, console_socket.as_deref());
    let spec = &spec;
    let b = builder(id, root, console_socket, load_executor(seccomp)?, stdio)?;
    if netns.is_none() && !sysctls.is_empty() {
        return Err(anyhow!(
            "container {id}: pod sysctls without a pod network namespace"
        ));
    }
    let create = move || {
        in_netns(netns, move || {
            for (name, value) in sysctls {
                write_sysctl(name, value)?;
            }
            create_in(b, id, bundle, spec)
        })
    };
    let (pid, stay) = match needed {
        Some(needed) => lean_ns::run_staying("create", &needed, create),
        None => (create(), lean_ns::Stay::none("create")),
    };
    // On an error the stay ends here, before the zygote answers.
    Ok((
        pid?,
        AfterCreate {
            stay,
            bundle: bundle.to_path_buf(),
        },
    ))
}

/// Write a sysctl of the current network namespace (`/proc/sys/net` is the opener's).
fn write_sysctl(name: &str, value: &str) -> anyhow::Result<()> {
    let segments: Vec<&str> = name.split(['.', '/']).collect();
    if segments.iter().any(|s| s.is_empty() || *s == "..") || segments[0] != "net" {
        return Err(anyhow!("sysctl {name:?}: not a net.* sysctl name"));
    }
    let path = Path::new("/proc/sys").join(segments.join("/"));
    std::fs::write(&path, value).with_context(|| {
        format!("setting sysctl {name}={value:?} in the pod's network namespace")
    })?;
    tracing::debug!(sysctl = name, value, "pod sysctl set");
    Ok(())
}

fn create_in(b: ContainerBuilder, id: &str, bundle: &Path, spec: &Spec) -> anyhow::Result<i32> {
    let mut container = b
        .as_init(bundle)
        .with_systemd(true)
        .with_detach(true)
        .as_sibling(true)
        .build()
        .map_err(lc)
        .with_context(|| format!("creating container {id}"))?;
    // libcgroups' systemd manager applies no device rules: put them on the scope now,
    // before the container starts.
    if let Err(e) = enforce_devices(spec) {
        let _ = container.delete(true);
        return Err(e.context(format!("creating container {id}")));
    }
    let pid = container
        .pid()
        .ok_or_else(|| anyhow!("container {id} has no init pid"))?;
    Ok(pid.as_raw())
}

/// `spec`: the bundle's config.json, as read once by [`create`].
fn enforce_devices(spec: &Spec) -> anyhow::Result<()> {
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    let path = linux.cgroups_path().as_ref().map(|p| p.to_string_lossy());
    match (path, linux.resources()) {
        (Some(path), Some(resources)) => crate::cgroups::enforce_devices(&path, resources),
        _ => Ok(()),
    }
}

fn load(id: &str, root: &Path) -> anyhow::Result<Container> {
    Container::load(root.join(id))
        .map_err(lc)
        .with_context(|| format!("loading container {id}"))
}

pub fn start(id: &str, root: &Path) -> anyhow::Result<()> {
    load(id, root)?.start().map_err(lc)
}

/// Start an extra process in a running container; returns its pid.
pub fn exec(
    id: &str,
    root: &Path,
    process: &Path,
    console_socket: Option<PathBuf>,
    seccomp: &Path,
    stdio: [Option<OwnedFd>; 3],
) -> anyhow::Result<i32> {
    let container = load(id, root)?;
    let init = container
        .pid()
        .ok_or_else(|| anyhow!("container {id} has no init process"))?;
    let bundle = container.bundle().to_path_buf();
    let netns = PathBuf::from(format!("/proc/{init}/ns/net"));

    let text = std::fs::read(process).with_context(|| format!("reading {}", process.display()))?;
    let mut proc: OciProcess =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", process.display()))?;
    let mut executor = load_executor(seccomp)?;
    let userns_path = format!("/proc/{init}/ns/user");
    let own = std::fs::metadata("/proc/self/ns/user").context("own user namespace")?;
    let theirs = std::fs::metadata(&userns_path).with_context(|| userns_path.clone())?;
    // Kept open until the tenant is built: the tenant inherits it through clone.
    let mut _userns = None;
    let process = if (own.dev(), own.ino()) != (theirs.dev(), theirs.ino()) {
        let f = std::fs::File::open(&userns_path).with_context(|| userns_path.clone())?;
        executor.join = Some(JoinUserns {
            fd: f.as_raw_fd(),
            user: proc.user().clone(),
            capabilities: proc.capabilities().clone().unwrap_or_default(),
        });
        _userns = Some(f);
        // libcontainer runs it as (host) root up to the executor, see JoinUserns.
        proc.set_user(User::default());
        let lc = process.with_extension("libcontainer.json");
        std::fs::write(&lc, serde_json::to_vec(&proc)?)
            .with_context(|| format!("writing {}", lc.display()))?;
        lc
    } else {
        process.to_path_buf()
    };
    let process = process.as_path();
    let mut extra = vec![bundle.as_path(), process];
    extra.extend(console_socket.as_deref());
    let needed = lean_ns::for_container(root, &extra);
    let b = builder(id, root, console_socket, executor, stdio)?;
    let pid = lean_ns::run_in("exec", &needed, move || {
        in_netns(Some(&netns), move || {
            b.as_tenant()
                .with_process(Some(process))
                .with_detach(true)
                .as_sibling(true)
                .build()
                .map_err(lc)
                .with_context(|| format!("exec in container {id}"))
        })
    })?;
    Ok(pid.as_raw())
}

pub fn kill(id: &str, root: &Path, signal: i32, all: bool) -> anyhow::Result<()> {
    let signal = Signal::try_from(signal).map_err(|e| anyhow!("signal {signal}: {e}"))?;
    lean_ns::run_in("kill", &lean_ns::for_container(root, &[]), || {
        load(id, root)?.kill(signal, all).map_err(lc)
    })
}

/// Delete the container's libcontainer state and cgroup; a container already gone is
/// not an error.
pub fn delete(id: &str, root: &Path, force: bool) -> anyhow::Result<()> {
    if !root.join(id).exists() {
        return Ok(());
    }
    let delete = || load(id, root)?.delete(force).map_err(lc);
    // Poststop hooks run programs of the node: only a container known to have none is
    // deleted in a namespace of its own.
    match YoukiConfig::load(root.join(id)) {
        Ok(config) if config.hooks.is_none() => {
            lean_ns::run_in("delete", &lean_ns::for_container(root, &[]), delete)
        }
        _ => delete(),
    }
}

pub fn pause(id: &str, root: &Path) -> anyhow::Result<()> {
    lean_ns::run_in("pause", &lean_ns::for_container(root, &[]), || {
        load(id, root)?.pause().map_err(lc)
    })
}

pub fn resume(id: &str, root: &Path) -> anyhow::Result<()> {
    lean_ns::run_in("resume", &lean_ns::for_container(root, &[]), || {
        load(id, root)?.resume().map_err(lc)
    })
}

/// The pod's user namespace (`userns`, a sandbox's `/proc/PID/ns/user`), or for a sandbox
/// whose namespace does not exist yet, a helper namespace with `range`'s mapping.
fn pod_userns_fd(range: IdRange, userns: Option<&Path>) -> anyhow::Result<OwnedFd> {
    Ok(match userns {
        Some(path) => std::fs::File::open(path)
            .with_context(|| format!("opening the pod's user namespace {}", path.display()))?
            .into(),
        None => stockade_runtime::userns::userns_fd(range)
            .map_err(|e| anyhow!("user namespace for the pod's mapping: {e}"))?,
    })
}

/// Mount the rootfs idmapped to the pod's range (see stockade_runtime::rootfs).
pub fn mount_rootfs(
    mounts: &[RootfsMount],
    target: &Path,
    staging: &Path,
    range: IdRange,
    userns: Option<&Path>,
) -> anyhow::Result<()> {
    let fd = pod_userns_fd(range, userns)?;
    rootfs::mount_rootfs(mounts, target, staging, range, fd.as_fd()).map_err(|e| anyhow!("{e}"))?;
    Ok(())
}

/// Stage the container's bind mounts (see stockade_runtime::volumes); a volume mounted
/// without idmapping (the profile's `volumes.unidmappable = "unmapped"`) is logged loudly.
pub fn stage_volumes(
    volumes: &[PlannedVolume],
    staging: &Path,
    range: IdRange,
    userns: Option<&Path>,
) -> anyhow::Result<()> {
    if volumes.is_empty() {
        return Ok(());
    }
    let fd = pod_userns_fd(range, userns)?;
    let staged = stockade_runtime::volumes::stage(volumes, staging, fd.as_fd())
        .map_err(|e| anyhow!("{e}"))?;
    for (n, fs_type) in &staged.unmapped {
        let v = &volumes[*n];
        let (volume, source) = (v.destination.display(), v.source.display());
        if v.kind == VolumeKind::PodFile {
            tracing::debug!(%volume, %source, fs_type, "containerd's pod file bound without idmapping");
            continue;
        }
        tracing::warn!(
            %volume,
            %source,
            fs_type,
            "volume mounted WITHOUT idmapping (volumes.unidmappable = \"unmapped\"): its files keep \
             their host IDs, which the pod sees as nobody"
        );
    }
    tracing::debug!(
        idmapped = staged.idmapped,
        plain = staged.plain,
        "volumes staged"
    );
    Ok(())
}

/// Unmount what [`mount_rootfs`] mounted (or, for a bundle from before a crash, whatever
/// is mounted there); nothing mounted is not an error.
pub fn unmount_rootfs(target: &Path, staging: &Path) -> anyhow::Result<()> {
    rootfs::unmount_rootfs(target, staging).map_err(|e| anyhow!("{e}"))
}
