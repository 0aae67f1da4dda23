//! Create: decide (profile, spec, pod, hardening: nothing on the node changes), then do
//! (rootfs, bundle, seccomp plan, the container's init), journaling each step's undo.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use containerd_shim_protos::api::{CreateTaskRequest, CreateTaskResponse};
use containerd_shim_protos::events::task::{TaskCreate, TaskIO};
use containerd_shim_protos::protobuf::MessageField;
use stockade_runtime::audit::AuditEvent;
use stockade_runtime::hardener::{
    self, volumes, CgroupDriver, HardenContext, HardenError, Hardened, ResolvedSources,
};
use stockade_runtime::idrange::IdRange;
use stockade_runtime::pod::{self, KnownSandbox, PodIdentity};
use stockade_runtime::profile::Profile;
use tracing::Instrument;

use super::process::{Container, Proc};
use super::spawn::Spawned;
use super::undo::{Undo, UndoStep};
use super::{pid_u32, TaskService};
use crate::error::{Result, ShimError};
use crate::io::StdioPaths;
use crate::launcher::container::FilterPlan;
use crate::launcher::Request;
use crate::state::{self, Record};
use crate::{audit, binds, quota};

/// What Create decided before touching the node.
struct Decision {
    profile_path: PathBuf,
    profile: Arc<Profile>,
    /// The spec file hardened (containerd's, or the copy kept by an earlier attempt).
    source: PathBuf,
    spec: stockade_runtime::oci_spec::runtime::Spec,
    pod: PodIdentity,
    image: Option<String>,
    pod_userns: Option<PathBuf>,
    pod_pids: Vec<i32>,
    /// systemd where the runtime options or the cgroupsPath ask for it and systemd runs
    /// the node on cgroup v2.
    cgroup_driver: CgroupDriver,
    /// The sandbox's range, for an app container of a pod this shim runs.
    pod_range: Option<IdRange>,
    resolved_sources: ResolvedSources,
}

impl TaskService {
    pub(super) async fn create(&self, req: CreateTaskRequest) -> Result<CreateTaskResponse> {
        let span = tracing::debug_span!("create", container = %req.id);
        self.create_container(req).instrument(span).await
    }

    async fn create_container(&self, req: CreateTaskRequest) -> Result<CreateTaskResponse> {
        let received = Instant::now();
        let id = req.id.clone();
        let bundle = PathBuf::from(&req.bundle);
        if self.inner.table.lock().await.contains(&id) {
            return Err(ShimError::AlreadyExists(format!("container {id} exists")));
        }
        if !req.checkpoint.is_empty() {
            return Err(ShimError::Unimplemented(format!(
                "container {id}: restoring from a checkpoint ({}) is not supported by Stockade",
                req.checkpoint
            )));
        }
        // Open until this Create returns: libcontainer moves the container then.
        let _attach_window = crate::cgroups::open_attach_window();
        self.close_start_window();
        let d = self
            .decide(&req, &bundle)
            .instrument(tracing::debug_span!("create.decide"))
            .await?;

        let mut undo = Undo::new(&id, &bundle);
        // Recorded before the sandbox's range is taken: if the shim dies from here on,
        // `shim delete` finds enough in the bundle to give the range back.
        let mut record = Record {
            id: id.clone(),
            namespace: self.inner.config.namespace.clone(),
            sandbox_id: d.pod.sandbox_id.clone(),
            is_sandbox: d.pod.is_sandbox,
            rootfs_mounted: false,
            cgroups_path: None,
            pod_cgroup: None,
            id_range: None,
            profile: d.profile_path.clone(),
        };
        record.save(&bundle)?;
        undo.push(UndoStep::RemoveRecord);
        // hostUsers: false: kubelet chose the pod's mapping; otherwise the pod gets a range.
        let kubelet_mapping = match hardener::kubelet_mapping(&d.spec, &d.profile) {
            Ok(mapping) => mapping,
            Err(e) => {
                audit::record(
                    &d.profile,
                    AuditEvent::from_outcome(&id, &d.pod, &d.profile.name, Err(&e))
                        .with_image(d.image.as_deref()),
                );
                self.run_undo(undo).await;
                return Err(ShimError::from_harden(e, Some(&d.source)));
            }
        };
        let id_range = match (kubelet_mapping, d.pod_range) {
            (Some(mapping), Some(pod)) if mapping != pod => {
                self.run_undo(undo).await;
                return Err(ShimError::InvalidArgument(format!(
                    "container {id}: kubelet's mapping {mapping} differs from its sandbox's {pod}"
                )));
            }
            (Some(mapping), _) => mapping,
            // An app container of a sandbox this shim runs: the range its sandbox got,
            // without a second trip through the node's allocator (a lock and a read of
            // every pod's allocation).
            (None, Some(pod)) => pod,
            // check_sandbox let no app container through without its sandbox's range.
            (None, None) if !d.pod.is_sandbox => {
                self.run_undo(undo).await;
                return Err(ShimError::Internal(anyhow::anyhow!(
                    "container {id}: sandbox {} has no ID range in this shim",
                    d.pod.sandbox_id
                )));
            }
            (None, None) => match tracing::debug_span!("create.id_range").in_scope(|| {
                self.inner
                    .host
                    .allocate_id_range(&d.pod.sandbox_id, d.profile.userns)
            }) {
                Ok(range) => range,
                Err(e) => {
                    self.run_undo(undo).await;
                    return Err(ShimError::ResourceExhausted(format!("{e:#}")));
                }
            },
        };
        if d.pod.is_sandbox && kubelet_mapping.is_none() {
            undo.push(UndoStep::ReleaseRange {
                sandbox_id: d.pod.sandbox_id.clone(),
                pool: d.profile.userns,
            });
        }
        // The node's facts: the first Create of a shim reads its cgroup mounts and the
        // layers' filesystem here.
        let facts = tracing::debug_span!("create.node_facts").entered();
        let ctx = HardenContext {
            container_id: id.clone(),
            sandbox_id: d.pod.sandbox_id.clone(),
            is_sandbox: d.pod.is_sandbox,
            id_range,
            pod_userns: d.pod_userns.clone(),
            pod_pids: d.pod_pids.clone(),
            // The shim runs in the host's network namespace.
            netns_path_is_host: stockade_runtime::namespaces::spec_netns_is_host(&d.spec),
            cgroup_driver: d.cgroup_driver,
            cgroup_v1: crate::cgroups::v1_hierarchies(),
            resolved_sources: d.resolved_sources.clone(),
            writable_layer: quota::writable_layer(&req),
        };
        drop(facts);
        let outcome = tracing::debug_span!("create.harden")
            .in_scope(|| hardener::harden(d.spec.clone(), &d.profile, &ctx));
        audit::record(
            &d.profile,
            AuditEvent::from_outcome(
                &id,
                &d.pod,
                &d.profile.name,
                outcome.as_ref().map(|h| &h.report),
            )
            .with_image(d.image.as_deref()),
        );
        let hardened = match outcome {
            Ok(h) => {
                quota::warn_unbounded(&id, &d.pod.sandbox_id, &h.report);
                h
            }
            Err(e) => {
                self.run_undo(undo).await;
                let e = ShimError::from_harden(e, Some(&d.source));
                tracing::warn!(container = %id, pod = %d.pod.sandbox_id, error = %e, "refused");
                return Err(e);
            }
        };
        // Exec processes are hardened against the spec as the hardener left it.
        let exec_base = hardened.spec.clone();
        record.id_range = Some(id_range);
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        let done = self
            .carry_out(&req, &d, hardened, &ctx, &mut record, &stdio, &mut undo)
            .await;
        let spawned = match done {
            Ok(s) => s,
            Err(e) => {
                self.run_undo(undo).await;
                tracing::warn!(container = %id, error = %format!("{e:#}"), "create failed");
                return Err(ShimError::Internal(e));
            }
        };
        undo.commit();

        let pid = spawned.pid;
        let cgroups_path = record.cgroups_path.clone().unwrap_or_default();
        let mut init = Proc::new(format!("container {id}"), stdio);
        init.pid = pid;
        init.console = spawned.console;
        let container = Container {
            bundle: bundle.clone(),
            pod: d.pod.clone(),
            image: d.image,
            created_at: received,
            record,
            profile: d.profile.clone(),
            ctx,
            spec: exec_base,
            cgroups_path: cgroups_path.clone(),
            init,
            execs: HashMap::new(),
        };
        self.inner.table.lock().await.insert(id.clone(), container);
        self.apply_early_exit(pid).await;
        self.watch_oom(&id, &cgroups_path);
        tracing::info!(container = %id, pod = %d.pod.sandbox_id, pid, profile = %d.profile.name, "created");
        self.publish(TaskCreate {
            container_id: id.clone(),
            bundle: req.bundle.clone(),
            rootfs: req.rootfs.clone(),
            io: MessageField::some(TaskIO {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
                ..Default::default()
            }),
            checkpoint: req.checkpoint.clone(),
            pid: pid_u32(pid),
            ..Default::default()
        })
        .await;
        Ok(CreateTaskResponse {
            pid: pid_u32(pid),
            ..Default::default()
        })
    }

    /// The profile, the spec and the pod: read, nothing changed.
    async fn decide(&self, req: &CreateTaskRequest, bundle: &Path) -> Result<Decision> {
        let profile_path = state::profile_path(req.options.as_ref())
            .map_err(|e| ShimError::InvalidArgument(format!("{e:#}")))?;
        let profile = {
            let (service, p) = (self.clone(), profile_path.clone());
            tokio::task::spawn_blocking(move || service.load_profile(&p))
                .await
                .map_err(|e| ShimError::Internal(e.into()))?
                .map_err(ShimError::InvalidArgument)?
        };
        let config = bundle.join("config.json");
        let original = bundle.join(state::ORIGINAL_SPEC);
        // A retried Create must harden what containerd wrote, not our own output.
        let source = if original.exists() { original } else { config };
        let spec = stockade_runtime::spec::load(&source)
            .map_err(|e| ShimError::InvalidArgument(e.to_string()))?;
        let annotations = spec.annotations().clone().unwrap_or_default();
        let pod = PodIdentity::from_annotations(&req.id, &annotations);
        let (pod_userns, pod_pids, pod_range) = {
            let table = self.inner.table.lock().await;
            let known = table.get(&pod.sandbox_id).ok().map(|s| KnownSandbox {
                namespace: s.record.namespace.clone(),
                is_sandbox: s.pod.is_sandbox,
            });
            if let Err(refusal) =
                pod::check_sandbox(&pod, &self.inner.config.namespace, known.as_ref())
            {
                audit::record(
                    &profile,
                    AuditEvent::refused(&req.id, &pod, &profile.name, &refusal),
                );
                return Err(ShimError::from_harden(HardenError::Refused(refusal), None));
            }
            (
                table.pod_userns(&pod)?,
                table.pod_pids(&pod),
                table.pod_range(&pod),
            )
        };
        let resolved_sources = self
            .inner
            .host
            .resolve_sources(&volumes::bind_sources(&spec));
        Ok(Decision {
            profile_path,
            profile,
            source,
            cgroup_driver: crate::cgroups::driver(req.options.as_ref(), &spec),
            spec,
            image: pod.image.clone(),
            pod,
            pod_userns,
            pod_pids,
            pod_range,
            resolved_sources,
        })
    }

    /// Loads the profile this shim was started with before the first Create asks for it.
    /// containerd connects and sends the sandbox's Create only once `start` has returned,
    /// and that round trip hides the load (its TOML, its seccomp filter compiled, the
    /// kubelet range read and checked). A failure is left for that Create to report.
    pub fn warm_up(&self) {
        let service = self.clone();
        tokio::task::spawn_blocking(move || {
            let Ok(path) = state::profile_path(None) else {
                return;
            };
            if let Err(e) = service.load_profile(&path) {
                tracing::debug!(profile = %path.display(), error = %e, "profile not loaded ahead");
            }
        });
    }

    /// The profile at `path`, from the cache; checked against kubelet's range when it is
    /// (re)loaded, not on every Create. Blocks: call it on a blocking thread.
    fn load_profile(&self, path: &Path) -> std::result::Result<Arc<Profile>, String> {
        self.inner
            .profiles
            .load(path, |profile| self.check_kubelet_overlap(profile))
    }

    /// The shim refuses a profile whose ID pool overlaps kubelet's user-namespace range.
    fn check_kubelet_overlap(&self, profile: &Profile) -> std::result::Result<(), String> {
        let source = profile.source.display();
        let kubelet = self
            .inner
            .host
            .kubelet_range(&profile.kubelet)
            .map_err(|e| format!("profile {source}: {e:#}"))?;
        match stockade_runtime::kubelet::pool_overlap(&profile.userns, kubelet.as_ref()) {
            Some(why) => Err(format!("profile {source} refused: {why}")),
            None => Ok(()),
        }
    }

    /// Carry out the hardened spec; every step pushes its undo first.
    #[allow(clippy::too_many_arguments)]
    async fn carry_out(
        &self,
        req: &CreateTaskRequest,
        d: &Decision,
        mut hardened: Hardened,
        ctx: &HardenContext,
        record: &mut Record,
        stdio: &StdioPaths,
        undo: &mut Undo,
    ) -> anyhow::Result<Spawned> {
        let bundle = PathBuf::from(&req.bundle);
        let netns = stockade_runtime::launch::take_netns_path(&mut hardened.spec);
        let sysctls = std::mem::take(&mut hardened.pod_sysctls);
        let cgroups_path = hardened
            .spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().clone())
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        record.cgroups_path = Some(cgroups_path.clone());
        record.pod_cgroup = {
            let pod_dir = format!("{}/{}", d.profile.cgroups.parent, d.pod.sandbox_id);
            cgroups_path
                .starts_with(&format!("{pod_dir}/"))
                .then_some(pod_dir)
        };
        record.save(&bundle)?;
        // From here the cgroup may exist: its directories are made beside the steps below.
        undo.push(UndoStep::SweepCgroups {
            record: Box::new(record.clone()),
        });
        let cgroup_dirs = self
            .inner
            .host
            .is_cgroup_v1()
            .then(|| self.make_cgroup_dirs(&cgroups_path));
        let staged = self.stage(req, d, &mut hardened, ctx, record, undo).await;
        // Done before anything is undone, so that the sweep finds all it made.
        if let Some(made) = cgroup_dirs {
            let _ = made.await;
        }
        let plan_path = staged?;

        let root = self.inner.root.clone();
        let spawned = self
            .spawn_process(stdio, |console_socket, mask| Request::Create {
                id: req.id.clone(),
                root,
                bundle: bundle.clone(),
                console_socket,
                seccomp: plan_path.clone(),
                stdio: mask,
                netns,
                sysctls,
            })
            .instrument(tracing::debug_span!("create.libcontainer"))
            .await;
        match spawned {
            Ok(s) => {
                undo.push(UndoStep::DeleteContainer);
                Ok(s)
            }
            Err(e) => {
                if e.launched {
                    undo.push(UndoStep::DeleteContainer);
                }
                Err(e.error)
            }
        }
    }

    /// The container's cgroup v1 directories, made on a blocking thread while Create goes
    /// on (`Host::make_v1_dirs`): on v2 libcgroups makes the path as it enables the
    /// parents' controllers, and there is nothing to make ahead. Where that fails, libcontainer makes them itself and
    /// names what fails.
    fn make_cgroup_dirs(&self, cgroups_path: &str) -> tokio::task::JoinHandle<()> {
        let host = self.inner.host.clone();
        let path = cgroups_path.to_string();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = host.make_cgroup_dirs(&path) {
                tracing::debug!(cgroup = %path, error = %format!("{e:#}"), "cgroup directories not made ahead");
            }
        })
    }

    /// Everything the container's create reads, in the bundle: the original spec kept,
    /// the quota, the rootfs, the volumes staged, the hardened spec and the seccomp plan
    /// (whose path it returns).
    async fn stage(
        &self,
        req: &CreateTaskRequest,
        d: &Decision,
        hardened: &mut Hardened,
        ctx: &HardenContext,
        record: &mut Record,
        undo: &mut Undo,
    ) -> anyhow::Result<PathBuf> {
        let bundle = PathBuf::from(&req.bundle);
        let host = &self.inner.host;
        let config = bundle.join("config.json");
        let original = bundle.join(state::ORIGINAL_SPEC);
        if !original.exists() {
            std::fs::copy(&config, &original)
                .with_context(|| format!("keeping {}", original.display()))?;
        }
        host.check_reachable(&bundle, ctx.id_range)?;
        if let Some(storage) = &hardened.storage {
            undo.push(UndoStep::ReleaseQuota);
            quota::apply(storage, &self.inner.config.state, &bundle, &req.id)?;
        }
        if !req.rootfs.is_empty() {
            let mounts = quota::rootfs_mounts(req);
            record.rootfs_mounted = true;
            record.save(&bundle)?;
            undo.push(UndoStep::UnmountRootfs);
            let mount = Request::Mount {
                mounts,
                target: bundle.join("rootfs"),
                staging: bundle.join(state::ROOTFS_STAGING),
                range: ctx.id_range,
                userns: ctx.pod_userns.clone(),
            };
            self.inner
                .launcher
                .call(mount, Vec::new())
                .instrument(tracing::debug_span!("create.mount_rootfs"))
                .await?;
        }
        let bundle_span = tracing::debug_span!("create.bundle");
        bundle_span.in_scope(|| host.open_bundle(&hardened.spec, &bundle, ctx.id_range))?;
        host.resolve_destinations(&mut hardened.spec, &bundle)?;
        let planned = std::mem::take(&mut hardened.volumes);
        if !planned.is_empty() {
            let staging = binds::staging_dir(&bundle);
            undo.push(UndoStep::UnstageBinds);
            let stage = Request::StageVolumes {
                volumes: planned.clone(),
                staging: staging.clone(),
                range: ctx.id_range,
                userns: ctx.pod_userns.clone(),
            };
            self.inner
                .launcher
                .call(stage, Vec::new())
                .instrument(tracing::debug_span!("create.stage_volumes"))
                .await?;
            volumes::point_at_staging(&mut hardened.spec, &planned, &staging);
        }
        let _bundle_span = bundle_span.entered();
        hardened
            .spec
            .save(&config)
            .map_err(|e| anyhow::anyhow!("writing hardened {}: {e}", config.display()))?;
        let plan = FilterPlan {
            filters: std::iter::once(hardened.seccomp.default.clone())
                .chain(hardened.seccomp.pod.clone())
                .collect(),
            log_denials: d.profile.seccomp.log_denials,
        };
        let plan_path = bundle.join(state::SECCOMP_FILE);
        undo.push(UndoStep::RemovePlan);
        std::fs::write(&plan_path, serde_json::to_vec(&plan)?)
            .with_context(|| format!("writing {}", plan_path.display()))?;
        Ok(plan_path)
    }

    fn watch_oom(&self, id: &str, cgroups_path: &str) {
        match self.inner.host.watch_oom(id, cgroups_path) {
            Ok(mut rx) => {
                let service = self.clone();
                tokio::spawn(async move {
                    while let Some(container_id) = rx.recv().await {
                        tracing::warn!(container = %container_id, "OOM kill");
                        service
                            .publish(containerd_shim_protos::events::task::TaskOOM {
                                container_id,
                                ..Default::default()
                            })
                            .await;
                    }
                });
            }
            Err(e) => {
                tracing::warn!(container = id, error = %format!("{e:#}"), "no OOM events");
            }
        }
    }
}
