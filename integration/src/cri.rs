//! A blocking CRI (v1) client over containerd's unix socket, with helpers that build the
//! pod and container configs the tests use.

use crate::image::BUSYBOX_IMAGE;
use anyhow::{anyhow, bail, Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint, Uri};

/// Deadline for one CRI call.
pub const CRI_TIMEOUT: Duration = Duration::from_secs(120);

/// What ExecSync returned.
#[derive(Debug, Clone)]
pub struct ExecResult {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

impl ExecResult {
    /// stdout, or an error carrying the exit code and stderr.
    pub fn ok(self) -> Result<String> {
        if self.exit_code != 0 {
            bail!(
                "exit code {}; stderr: {}; stdout: {}",
                self.exit_code,
                self.stderr,
                self.stdout
            );
        }
        Ok(self.stdout)
    }
}

pub struct Cri {
    rt: tokio::runtime::Runtime,
    /// Deadline for each call.
    timeout: Duration,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    log_root: PathBuf,
    cgroup_parent: String,
    netns: Arc<Mutex<Vec<PathBuf>>>,
}

/// A gRPC status as an error that keeps the server's message (policy refusals name
/// their rule there).
fn status_err(call: &str, s: tonic::Status) -> anyhow::Error {
    anyhow!("CRI {call} failed: {:?}: {}", s.code(), s.message())
}

impl Cri {
    /// Connect to the CRI service on `socket`. Pod logs go below `log_root`; pods get
    /// `cgroup_parent`; pod network namespaces are recorded in `netns` for cleanup.
    pub fn connect(
        socket: &Path,
        log_root: PathBuf,
        cgroup_parent: String,
        netns: Arc<Mutex<Vec<PathBuf>>>,
    ) -> Result<Cri> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the CRI client's runtime")?;
        let path = socket.to_path_buf();
        let channel = rt.block_on(async move {
            // The URI is required by tonic but unused: the connector dials the socket.
            Endpoint::try_from("http://[::]:0")?
                .connect_timeout(Duration::from_secs(10))
                .connect_with_connector(tower::service_fn(move |_: Uri| {
                    let path = path.clone();
                    async move {
                        let stream = tokio::net::UnixStream::connect(path).await?;
                        Ok::<_, std::io::Error>(TokioIo::new(stream))
                    }
                }))
                .await
        });
        let channel = channel.with_context(|| format!("connecting to {}", socket.display()))?;
        Ok(Cri {
            rt,
            timeout: CRI_TIMEOUT,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
            log_root,
            cgroup_parent,
            netns,
        })
    }

    /// The same client with a different deadline per call.
    pub fn with_timeout(mut self, timeout: Duration) -> Cri {
        self.timeout = timeout;
        self
    }

    fn call<T>(
        &self,
        name: &str,
        fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T> {
        self.rt.block_on(async {
            match tokio::time::timeout(self.timeout, fut).await {
                Ok(Ok(resp)) => Ok(resp.into_inner()),
                Ok(Err(status)) => Err(status_err(name, status)),
                Err(_) => Err(anyhow!("CRI {name} timed out after {:?}", self.timeout)),
            }
        })
    }

    pub fn version(&self) -> Result<VersionResponse> {
        let mut c = self.runtime.clone();
        self.call("Version", c.version(VersionRequest::default()))
    }

    fn image_status(&self, image: &str) -> Result<ImageStatusResponse> {
        let mut c = self.images.clone();
        self.call(
            "ImageStatus",
            c.image_status(ImageStatusRequest {
                image: Some(ImageSpec {
                    image: image.to_string(),
                    ..Default::default()
                }),
                verbose: false,
            }),
        )
    }

    /// True when the image service knows `image`.
    pub fn image_present(&self, image: &str) -> Result<bool> {
        Ok(self.image_status(image)?.image.is_some())
    }

    /// The image's ID (its config digest, `sha256:...`), which CRI also accepts as a
    /// reference.
    pub fn image_id(&self, image: &str) -> Result<String> {
        self.image_status(image)?
            .image
            .map(|i| i.id)
            .filter(|id| !id.is_empty())
            .with_context(|| format!("no image {image}"))
    }

    /// A pod config with a unique uid, a log directory, this instance's cgroup parent
    /// and default (namespaced, unprivileged) security settings.
    pub fn pod_config(&self, name: &str) -> PodSandboxConfig {
        let uid = format!("{name}-{}", unique_suffix());
        PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: name.to_string(),
                uid: uid.clone(),
                namespace: "stockade-it".to_string(),
                attempt: 0,
            }),
            hostname: name.to_string(),
            log_directory: self.log_root.join(&uid).display().to_string(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(kubelet_namespaces()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// A busybox container config running `cmd`, logging to `<name>.log`.
    pub fn container_config(&self, name: &str, cmd: &[&str]) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.to_string(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: BUSYBOX_IMAGE.to_string(),
                ..Default::default()
            }),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            log_path: format!("{name}.log"),
            linux: Some(LinuxContainerConfig {
                resources: None,
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(kubelet_namespaces()),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        }
    }

    /// [`Cri::container_config`] whose process runs as `uid` (securityContext.runAsUser).
    pub fn container_config_as(&self, name: &str, cmd: &[&str], uid: i64) -> ContainerConfig {
        let mut cfg = self.container_config(name, cmd);
        if let Some(sc) = cfg.linux.as_mut().and_then(|l| l.security_context.as_mut()) {
            sc.run_as_user = Some(Int64Value { value: uid });
        }
        cfg
    }

    /// RunPodSandbox with `runtime_handler`; returns the pod sandbox id.
    pub fn run_pod_sandbox(
        &self,
        config: &PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String> {
        if !config.log_directory.is_empty() {
            std::fs::create_dir_all(&config.log_directory)
                .with_context(|| format!("creating {}", config.log_directory))?;
        }
        let mut c = self.runtime.clone();
        let resp = self.call(
            "RunPodSandbox",
            c.run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: runtime_handler.to_string(),
            }),
        )?;
        if let Ok(Some(ns)) = self.pod_netns(&resp.pod_sandbox_id) {
            if let Ok(mut list) = self.netns.lock() {
                list.push(ns);
            }
        }
        Ok(resp.pod_sandbox_id)
    }

    pub fn pod_sandbox_status(&self, pod_id: &str) -> Result<PodSandboxStatusResponse> {
        let mut c = self.runtime.clone();
        self.call(
            "PodSandboxStatus",
            c.pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: pod_id.to_string(),
                verbose: true,
            }),
        )
    }

    /// The verbose `info` JSON of a pod sandbox.
    pub fn pod_info(&self, pod_id: &str) -> Result<serde_json::Value> {
        let resp = self.pod_sandbox_status(pod_id)?;
        let info = resp
            .info
            .get("info")
            .context("PodSandboxStatus has no verbose info")?;
        serde_json::from_str(info).context("parsing PodSandboxStatus info")
    }

    /// The pod's network namespace path on the host, if it has its own.
    pub fn pod_netns(&self, pod_id: &str) -> Result<Option<PathBuf>> {
        let info = self.pod_info(pod_id)?;
        let namespaces = info
            .pointer("/runtimeSpec/linux/namespaces")
            .and_then(|v| v.as_array())
            .cloned()
            .unwrap_or_default();
        Ok(namespaces
            .iter()
            .find(|n| n.get("type").and_then(|t| t.as_str()) == Some("network"))
            .and_then(|n| n.get("path").and_then(|p| p.as_str()))
            .filter(|p| !p.is_empty())
            .map(PathBuf::from))
    }

    /// Host PID of the pod's sandbox (pause) process.
    pub fn pod_pid(&self, pod_id: &str) -> Result<i32> {
        let info = self.pod_info(pod_id)?;
        info.get("pid")
            .and_then(|p| p.as_i64())
            .filter(|p| *p > 0)
            .map(|p| p as i32)
            .context("PodSandboxStatus info has no pid")
    }

    pub fn list_pod_sandboxes(&self) -> Result<Vec<PodSandbox>> {
        let mut c = self.runtime.clone();
        Ok(self
            .call(
                "ListPodSandbox",
                c.list_pod_sandbox(ListPodSandboxRequest { filter: None }),
            )?
            .items)
    }

    pub fn create_container(
        &self,
        pod_id: &str,
        config: &ContainerConfig,
        sandbox_config: &PodSandboxConfig,
    ) -> Result<String> {
        let mut c = self.runtime.clone();
        Ok(self
            .call(
                "CreateContainer",
                c.create_container(CreateContainerRequest {
                    pod_sandbox_id: pod_id.to_string(),
                    config: Some(config.clone()),
                    sandbox_config: Some(sandbox_config.clone()),
                }),
            )?
            .container_id)
    }

    pub fn start_container(&self, id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        self.call(
            "StartContainer",
            c.start_container(StartContainerRequest {
                container_id: id.to_string(),
            }),
        )?;
        Ok(())
    }

    /// CreateContainer + StartContainer; returns the container id.
    pub fn run_container(
        &self,
        pod_id: &str,
        config: &ContainerConfig,
        sandbox_config: &PodSandboxConfig,
    ) -> Result<String> {
        let id = self.create_container(pod_id, config, sandbox_config)?;
        self.start_container(&id)?;
        Ok(id)
    }

    /// A pod named `name` under `handler` with one running container `app` running `cmd`:
    /// (pod id, container id).
    pub fn run_pod_with_app(
        &self,
        name: &str,
        handler: &str,
        cmd: &[&str],
    ) -> Result<(String, String)> {
        let pod_cfg = self.pod_config(name);
        let pod = self.run_pod_sandbox(&pod_cfg, handler)?;
        let id = self.run_container(&pod, &self.container_config("app", cmd), &pod_cfg)?;
        Ok((pod, id))
    }

    pub fn exec_sync(&self, id: &str, cmd: &[&str]) -> Result<ExecResult> {
        let mut c = self.runtime.clone();
        let resp = self.call(
            "ExecSync",
            c.exec_sync(ExecSyncRequest {
                container_id: id.to_string(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout: 60,
            }),
        )?;
        Ok(ExecResult {
            stdout: String::from_utf8_lossy(&resp.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&resp.stderr).into_owned(),
            exit_code: resp.exit_code,
        })
    }

    pub fn container_status(&self, id: &str) -> Result<ContainerStatusResponse> {
        let mut c = self.runtime.clone();
        self.call(
            "ContainerStatus",
            c.container_status(ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: true,
            }),
        )
    }

    /// The container's state (CONTAINER_RUNNING, CONTAINER_EXITED, ...).
    pub fn container_state(&self, id: &str) -> Result<ContainerState> {
        let status = self.container_status(id)?.status.context("no status")?;
        ContainerState::try_from(status.state).context("unknown container state")
    }

    /// Host PID of a running container's init process.
    pub fn container_pid(&self, id: &str) -> Result<i32> {
        let resp = self.container_status(id)?;
        let info = resp
            .info
            .get("info")
            .context("ContainerStatus has no verbose info")?;
        let info: serde_json::Value = serde_json::from_str(info)?;
        info.get("pid")
            .and_then(|p| p.as_i64())
            .filter(|p| *p > 0)
            .map(|p| p as i32)
            .context("ContainerStatus info has no pid (not running?)")
    }

    /// The container's log as the application wrote it (CRI log framing removed).
    pub fn container_logs(&self, id: &str) -> Result<String> {
        let status = self.container_status(id)?.status.context("no status")?;
        let text = std::fs::read_to_string(&status.log_path)
            .with_context(|| format!("reading {}", status.log_path))?;
        Ok(parse_cri_log(&text))
    }

    pub fn update_container_resources(
        &self,
        id: &str,
        resources: LinuxContainerResources,
    ) -> Result<()> {
        let mut c = self.runtime.clone();
        self.call(
            "UpdateContainerResources",
            c.update_container_resources(UpdateContainerResourcesRequest {
                container_id: id.to_string(),
                linux: Some(resources),
                ..Default::default()
            }),
        )?;
        Ok(())
    }

    pub fn stop_container(&self, id: &str, timeout_s: i64) -> Result<()> {
        let mut c = self.runtime.clone();
        self.call(
            "StopContainer",
            c.stop_container(StopContainerRequest {
                container_id: id.to_string(),
                timeout: timeout_s,
            }),
        )?;
        Ok(())
    }

    pub fn remove_container(&self, id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        self.call(
            "RemoveContainer",
            c.remove_container(RemoveContainerRequest {
                container_id: id.to_string(),
            }),
        )?;
        Ok(())
    }

    pub fn stop_pod_sandbox(&self, pod_id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        self.call(
            "StopPodSandbox",
            c.stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: pod_id.to_string(),
            }),
        )?;
        Ok(())
    }

    pub fn remove_pod_sandbox(&self, pod_id: &str) -> Result<()> {
        let mut c = self.runtime.clone();
        self.call(
            "RemovePodSandbox",
            c.remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: pod_id.to_string(),
            }),
        )?;
        Ok(())
    }
}

/// What kubelet asks for by default: pod network and IPC, a PID namespace per container.
fn kubelet_namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// CRI log lines are `<time> <stream> <P|F> <text>`; P marks a partial line.
pub fn parse_cri_log(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let mut parts = line.splitn(4, ' ');
        let (_, _, tag) = (parts.next(), parts.next(), parts.next());
        let content = parts.next().unwrap_or("");
        out.push_str(content);
        if tag != Some("P") {
            out.push('\n');
        }
    }
    out
}

fn unique_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{:x}{:x}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        nanos
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cri_log_framing() {
        let log = "2024-01-01T00:00:00.000000000Z stdout F hello\n\
                   2024-01-01T00:00:00.000000001Z stdout P par\n\
                   2024-01-01T00:00:00.000000002Z stdout F tial\n";
        assert_eq!(parse_cri_log(log), "hello\npartial\n");
    }
}
