//! `containerd-shim-stockadenull-v1`: the benchmark's floor (runtime_type
//! `io.containerd.stockadenull.v1`). It answers containerd's Task API with a real child
//! process running the bundle's command, chrooted into the rootfs, and nothing else: no
//! namespaces, no cgroups, no hardening. What a pod costs under it is containerd's own
//! share plus the least any shim v2 runtime must do (start a shim, mount the rootfs,
//! fork and exec). Never a runtime for real workloads.
//!
//! Actions: `start` (find or launch the pod's shim server and print its address, the
//! bare address containerd 1.6 expects), `delete` (clean up after a dead shim), and the
//! server itself when no action is given.

mod process;
mod server;
mod spec;
mod task;

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use anyhow::Context;
use containerd_shim::{Flags, StartOpts};
use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::{Message, MessageField};

const RUNTIME_ID: &str = "io.containerd.stockadenull.v1";

fn main() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let flags = match containerd_shim::parse(args.get(1..).unwrap_or_default()) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("{RUNTIME_ID}: {e}");
            std::process::exit(2);
        }
    };
    if flags.version {
        println!(
            "containerd-shim-stockadenull-v1 {}",
            env!("CARGO_PKG_VERSION")
        );
        return;
    }
    let result = if flags.info {
        let info = containerd_shim_protos::types::introspection::RuntimeInfo {
            name: RUNTIME_ID.to_string(),
            ..Default::default()
        };
        info.write_to_bytes()
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(std::io::stdout().write_all(&b)?))
    } else {
        match flags.action.as_str() {
            "start" => start(&flags),
            "delete" => delete(&flags),
            "" => server::run(&flags),
            other => Err(anyhow::anyhow!("unknown action {other:?}")),
        }
    };
    if let Err(e) = result {
        eprintln!("{RUNTIME_ID}: {e:#}");
        std::process::exit(1);
    }
}

fn bundle_dir(flags: &Flags) -> anyhow::Result<PathBuf> {
    if flags.bundle.is_empty() {
        std::env::current_dir().context("current directory")
    } else {
        Ok(PathBuf::from(&flags.bundle))
    }
}

/// One shim per pod, like runc's and Stockade's: an app container joins the shim of its
/// sandbox when that one already serves (no new process), otherwise a server is spawned.
fn start(flags: &Flags) -> anyhow::Result<()> {
    let bundle = bundle_dir(flags)?;
    let spec = spec::load(&bundle.join("config.json"))?;
    let group = spec.sandbox_id().unwrap_or_else(|| flags.id.clone());
    let opts = StartOpts {
        id: flags.id.clone(),
        publish_binary: flags.publish_binary.clone(),
        address: flags.address.clone(),
        ttrpc_address: std::env::var("TTRPC_ADDRESS").unwrap_or_default(),
        namespace: flags.namespace.clone(),
        debug: flags.debug,
        ..Default::default()
    };
    let address = opts.socket_address(&group);
    let socket = address.trim_start_matches("unix://").to_string();
    if UnixStream::connect(&socket).is_err() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("tokio runtime")?;
        runtime
            .block_on(containerd_shim::spawn(opts, &group, Vec::new()))
            .map_err(|e| anyhow::anyhow!("starting the shim server: {e}"))?;
        UnixStream::connect(&socket)
            .with_context(|| format!("the shim server of {group} is not serving at {socket}"))?;
    }
    std::fs::write(bundle.join("address"), &address).context("writing the address file")?;
    let mut out = std::io::stdout();
    out.write_all(address.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// After a dead shim: unmount the rootfs, report the container killed.
fn delete(flags: &Flags) -> anyhow::Result<()> {
    let bundle = bundle_dir(flags)?;
    process::unmount_rootfs(&bundle.join("rootfs"));
    let resp = DeleteResponse {
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: MessageField::some(task::now()),
        ..Default::default()
    };
    std::io::stdout().write_all(&resp.write_to_bytes()?)?;
    Ok(())
}
