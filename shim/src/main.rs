//! `containerd-shim-stockade-v1`: the action containerd asked for (see the library).

use std::io::Write;

use containerd_shim_protos::protobuf::Message;
use containerd_shim_stockade_v1::launcher::zygote;
use containerd_shim_stockade_v1::{bootstrap, delete_action, features, server, RUNTIME_ID};
use stockade_runtime::state_dir::StateDir;

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
    let state = match StateDir::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{RUNTIME_ID}: {e}");
            std::process::exit(1);
        }
    };
    let result = if flags.info {
        features::runtime_info().and_then(|info| {
            std::io::stdout().write_all(&info.write_to_bytes()?)?;
            Ok(())
        })
    } else {
        match flags.action.as_str() {
            "start" => bootstrap::run(&flags),
            "delete" => delete_action::run(&flags, &state),
            zygote::ACTION => zygote::run_exec(flags.debug),
            "" => server::run(&flags, state),
            other => Err(anyhow::anyhow!("unknown action {other:?}")),
        }
    };
    if let Err(e) = result {
        eprintln!("{RUNTIME_ID}: {e:#}");
        std::process::exit(1);
    }
}
