//! `containerd-shim-stockade-v1`: the containerd shim v2 of Stockade.
//!
//! Actions: `start` (find or launch the pod's shim server), `delete` (clean up after a
//! dead shim) and, without an action, the server itself. The server forks its zygote
//! before any thread exists (see zygote.rs); only then does tokio start.

mod audit;
mod binds;
mod cgroups;
mod cleanup;
mod container;
mod io;
mod logging;
mod oom;
mod podrange;
mod server;
mod service;
mod start;
mod state;
mod stats;
mod zygote;

use std::io::Write;

use containerd_shim_protos::protobuf::Message;

const RUNTIME_ID: &str = "io.containerd.stockade.v1";

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
        println!("containerd-shim-stockade-v1 {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    if let Err(e) = state::init_state_dir() {
        eprintln!("{RUNTIME_ID}: {e:#}");
        std::process::exit(1);
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
            "start" => start::run(&flags),
            "delete" => {
                logging::init_stderr(flags.debug);
                cleanup::run(&flags)
            }
            "" => server::run(&flags),
            other => Err(anyhow::anyhow!("unknown action {other:?}")),
        }
    };
    if let Err(e) = result {
        eprintln!("{RUNTIME_ID}: {e:#}");
        std::process::exit(1);
    }
}
