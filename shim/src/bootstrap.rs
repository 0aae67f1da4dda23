//! The `start` action: find or launch the pod's shim server and tell containerd its address.
//!
//! Two protocols, told apart by what containerd writes on stdin:
//! - containerd 2.3+ sends `BootstrapParams` (its instance id and namespace match the
//!   command line) and reads a `BootstrapResult`;
//! - older containerds pass flags and environment, with the runtime options (a protobuf
//!   `Any`) on stdin, and read the reply as an address. containerd 1.6 reads only a bare
//!   address; 1.7 and 2.x also accept one (as task API v2, which the server serves too).
//!
//! containerd-shim's own bootstrap (`asynchronous::run`) answers the legacy protocol with
//! JSON that containerd 1.6 cannot read, so Stockade decodes with its types
//! (`BootstrapParams`, `StartOpts`) and writes the reply each containerd can read.

use std::io::{IsTerminal, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use anyhow::Context;
use containerd_shim::bootstrap::{BootstrapParams, BootstrapResult};
use containerd_shim::{Flags, StartOpts};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use stockade_runtime::pod::PodIdentity;

use crate::state;

/// Most containerd writes on stdin (its own limit).
const MAX_INPUT: u64 = 10 << 20;

/// How containerd asked, and so how to answer.
#[derive(Debug, PartialEq)]
enum Protocol {
    Bootstrap,
    Legacy,
}

/// What containerd passed to `start`, whichever protocol it used.
#[derive(Debug)]
struct StartInput {
    protocol: Protocol,
    opts: StartOpts,
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut input = Vec::new();
    if !std::io::stdin().is_terminal() {
        std::io::stdin()
            .take(MAX_INPUT)
            .read_to_end(&mut input)
            .context("reading what containerd passed on stdin")?;
    }
    Ok(input)
}

/// Decode stdin: `BootstrapParams` for this very shim, else the legacy flags and options.
fn parse_input(input: &[u8], flags: &Flags, ttrpc_address: String) -> StartInput {
    if let Ok(params) = BootstrapParams::parse_from_bytes(input) {
        // Legacy options (an `Any`) decode as BootstrapParams too, but never with our id.
        if !input.is_empty()
            && params.instance_id == flags.id
            && params.namespace == flags.namespace
        {
            return StartInput {
                protocol: Protocol::Bootstrap,
                opts: params.into(),
            };
        }
    }
    let options = Any::parse_from_bytes(input)
        .ok()
        .filter(|a| !a.type_url.is_empty());
    StartInput {
        protocol: Protocol::Legacy,
        opts: StartOpts {
            id: flags.id.clone(),
            publish_binary: flags.publish_binary.clone(),
            address: flags.address.clone(),
            ttrpc_address,
            namespace: flags.namespace.clone(),
            debug: flags.debug,
            extensions: options.into_iter().collect(),
            ..Default::default()
        },
    }
}

fn encode_reply(address: &str, protocol: &Protocol) -> anyhow::Result<Vec<u8>> {
    match protocol {
        Protocol::Legacy => Ok(address.as_bytes().to_vec()),
        Protocol::Bootstrap => Ok(BootstrapResult {
            version: containerd_shim_protos::TASK_API_VERSION,
            address: address.to_string(),
            protocol: "ttrpc".to_string(),
            ..Default::default()
        }
        .write_to_bytes()?),
    }
}

/// The pod a container belongs to, from the bundle's config.json annotations.
fn grouping(id: &str, bundle: &Path) -> anyhow::Result<String> {
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
    let input = read_stdin()?;
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").unwrap_or_default();
    let StartInput { protocol, opts } = parse_input(&input, flags, ttrpc_address);
    let mut profile = None;
    for options in &opts.extensions {
        if let Some(path) = state::config_path_from_options(options)? {
            profile = Some(path.to_string_lossy().into_owned());
        }
    }
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().context("current directory")?
    } else {
        PathBuf::from(&flags.bundle)
    };
    let group = grouping(&flags.id, &bundle)?;
    let vars: Vec<(&str, &str)> = profile
        .as_deref()
        .map(|p| vec![(state::PROFILE_ENV, p)])
        .unwrap_or_default();
    // The pod's server may serve already (every app container after the sandbox): then
    // there is nothing to launch, and no second process of this binary to start and end.
    let existing = opts.socket_address(&group);
    let address = if serving(&existing) {
        existing
    } else {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?;
        let address = runtime
            .block_on(containerd_shim::spawn(opts, &group, vars))
            .map_err(|e| anyhow::anyhow!("starting the shim server: {e}"))?;
        check_serving(&address, &group)?;
        address
    };
    std::fs::write(bundle.join("address"), &address).context("writing the address file")?;
    let mut out = std::io::stdout();
    out.write_all(&encode_reply(&address, &protocol)?)?;
    out.flush()?;
    Ok(())
}

/// A server accepts connections at `address`.
fn serving(address: &str) -> bool {
    UnixStream::connect(address.trim_start_matches("unix://")).is_ok()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn flags() -> Flags {
        Flags {
            id: "c1".into(),
            namespace: "k8s.io".into(),
            address: "/run/containerd/containerd.sock".into(),
            ..Default::default()
        }
    }

    #[test]
    fn legacy_input_carries_the_runtime_options_and_gets_a_bare_address() {
        let options = Any {
            type_url: "cri.runtimeoptions.v1.Options".into(),
            value: vec![0x12, 2, b'/', b'p'],
            ..Default::default()
        };
        let input = parse_input(&options.write_to_bytes().unwrap(), &flags(), "t".into());
        assert_eq!(input.protocol, Protocol::Legacy);
        assert_eq!(input.opts.ttrpc_address, "t");
        assert_eq!(input.opts.extensions, vec![options]);
        assert_eq!(
            encode_reply("unix:///s/x", &input.protocol).unwrap(),
            b"unix:///s/x"
        );
        let empty = parse_input(b"", &flags(), "t".into());
        assert_eq!(empty.protocol, Protocol::Legacy);
        assert!(empty.opts.extensions.is_empty());
    }

    #[test]
    fn bootstrap_params_for_this_shim_get_a_bootstrap_result() {
        let params = BootstrapParams {
            instance_id: "c1".into(),
            namespace: "k8s.io".into(),
            containerd_ttrpc_address: "/run/containerd/containerd.sock.ttrpc".into(),
            ..Default::default()
        };
        let input = parse_input(&params.write_to_bytes().unwrap(), &flags(), String::new());
        assert_eq!(input.protocol, Protocol::Bootstrap);
        assert_eq!(
            input.opts.ttrpc_address,
            "/run/containerd/containerd.sock.ttrpc"
        );
        let reply = encode_reply("unix:///s/x", &input.protocol).unwrap();
        let result = BootstrapResult::parse_from_bytes(&reply).unwrap();
        assert_eq!(
            (result.address.as_str(), result.protocol.as_str()),
            ("unix:///s/x", "ttrpc")
        );
    }
}
