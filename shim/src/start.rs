//! The `start` action: find or launch the pod's shim server and print its address.
//!
//! containerd-shim 0.12 answers `start` with a JSON reply (containerd 2.x); containerd
//! 1.6 reads a bare address, which containerd 2.x also accepts (as task API v2, which the
//! server serves too). So Stockade handles `start` itself.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::Context;
use containerd_shim::{Flags, StartOpts};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use stockade_runtime::pod::PodIdentity;

use crate::state;

/// The pod a container belongs to, from the bundle's config.json annotations.
fn grouping(id: &str, bundle: &std::path::Path) -> anyhow::Result<String> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let spec: serde_json::Value =
        serde_json::from_slice(&text).with_context(|| format!("parsing {}", path.display()))?;
    let annotations = spec
        .get("annotations")
        .and_then(|a| serde_json::from_value(a.clone()).ok())
        .unwrap_or_default();
    Ok(PodIdentity::from_annotations(id, &annotations).sandbox_id)
}

pub fn run(flags: &Flags) -> anyhow::Result<()> {
    let mut input = Vec::new();
    if !std::io::stdin().is_terminal() {
        std::io::stdin()
            .take(10 << 20)
            .read_to_end(&mut input)
            .context("reading runtime options from stdin")?;
    }
    let options = Any::parse_from_bytes(&input).ok();
    let profile = options
        .as_ref()
        .map(state::config_path_from_options)
        .transpose()?
        .flatten();

    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().context("current directory")?
    } else {
        PathBuf::from(&flags.bundle)
    };
    let group = grouping(&flags.id, &bundle)?;
    let opts = StartOpts {
        id: flags.id.clone(),
        publish_binary: flags.publish_binary.clone(),
        address: flags.address.clone(),
        ttrpc_address: std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        namespace: flags.namespace.clone(),
        debug: flags.debug,
        ..Default::default()
    };
    let profile_env = profile.map(|p| p.to_string_lossy().into_owned());
    let vars: Vec<(&str, &str)> = profile_env
        .as_deref()
        .map(|p| vec![(state::PROFILE_ENV, p)])
        .unwrap_or_default();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let address = runtime
        .block_on(containerd_shim::spawn(opts, &group, vars))
        .map_err(|e| anyhow::anyhow!("starting the shim server: {e}"))?;
    check_serving(&address, &group)?;
    std::fs::write(bundle.join("address"), &address).context("writing the address file")?;
    let mut out = std::io::stdout();
    out.write_all(address.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The server (new, or the pod's running one) must be listening by now. One that died while
/// starting leaves its socket, and containerd runs no `delete` for a shim whose start
/// failed: remove the socket here and fail the start.
fn check_serving(address: &str, group: &str) -> anyhow::Result<()> {
    let socket = Path::new(address.trim_start_matches("unix://"));
    match UnixStream::connect(socket) {
        Ok(_) => Ok(()),
        Err(e) => {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                let _ = std::fs::remove_file(socket);
            }
            Err(e).with_context(|| {
                format!(
                    "the shim server of pod {group} is not serving at {}",
                    socket.display()
                )
            })
        }
    }
}
