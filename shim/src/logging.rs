//! tracing setup: the server writes to the bundle's `log` fifo, which containerd reads
//! into its own log; the other actions write to stderr.

use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

use tracing_subscriber::EnvFilter;

/// `STOCKADE_LOG` (EnvFilter syntax) wins; otherwise containerd's debug flag. libcontainer
/// is kept a level quieter: at debug it logs every mount and cgroup file it touches.
fn filter(debug: bool) -> EnvFilter {
    EnvFilter::try_from_env("STOCKADE_LOG").unwrap_or_else(|_| {
        EnvFilter::new(if debug {
            "debug,libcontainer=info,libcgroups=info"
        } else {
            "info,libcontainer=error,libcgroups=warn"
        })
    })
}

/// containerd opens `log` (a fifo in the bundle) before starting the shim; writes never
/// block (a full fifo drops lines rather than stalling the shim).
pub fn init_server(debug: bool) {
    let log = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("log");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter(debug))
        .with_ansi(false)
        .with_target(false);
    let _ = match log {
        Ok(f) => builder.with_writer(Mutex::new(f)).try_init(),
        Err(_) => builder.with_writer(std::io::stderr).try_init(),
    };
}

pub fn init_stderr(debug: bool) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter(debug))
        .with_ansi(false)
        .with_target(false)
        .with_writer(std::io::stderr)
        .try_init();
}
