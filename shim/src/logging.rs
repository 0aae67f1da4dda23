//! tracing setup: the server writes to the bundle's `log` fifo, which containerd reads
//! into its own log; the other actions write to stderr.

use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::{Mutex, OnceLock};

use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// `STOCKADE_LOG` (EnvFilter syntax) wins; otherwise containerd's debug flag. libcontainer
/// is kept a level quieter: at debug it logs every mount and cgroup file it touches.
fn filter(debug: bool) -> EnvFilter {
    EnvFilter::try_from_env("STOCKADE_LOG").unwrap_or_else(|_| {
        EnvFilter::new(if debug {
            "debug,libcontainer=info,libcgroups=info"
        } else {
            "info,libcontainer=error,libcgroups=error"
        })
    })
}

/// libcontainer is built without libseccomp and warns, for every container, that it cannot
/// install seccomp or enforce no_new_privs. Stockade does both itself (in the Executor,
/// right before exec), so on a hardened runtime that warning would only mislead. (The
/// module's only other warnings are about a malformed LISTEN_FDS, which containerd does not
/// set.)
fn is_libseccomp_warning(meta: &tracing::Metadata<'_>) -> bool {
    meta.target() == "libcontainer::process::init::process" && *meta.level() == tracing::Level::WARN
}

fn init<W>(debug: bool, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    // At debug, each span's close line carries its duration: the bench sums the Create
    // and Start phases from them (bench/README.md).
    let layer = tracing_subscriber::fmt::layer()
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .with_ansi(false)
        .with_target(false)
        .with_writer(writer)
        .with_filter(filter_fn(|meta| !is_libseccomp_warning(meta)));
    let _ = tracing_subscriber::registry()
        .with(filter(debug))
        .with(layer)
        .try_init();
}

/// The server's log, kept for the zygotes it execs later (their stderr).
static SERVER_LOG: OnceLock<OwnedFd> = OnceLock::new();

/// containerd opens `log` (a fifo in the bundle) before starting the shim; writes never
/// block (a full fifo drops lines rather than stalling the shim).
pub fn init_server(debug: bool) {
    let log = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("log");
    match log {
        Ok(f) => {
            if let Ok(copy) = f.try_clone() {
                let _ = SERVER_LOG.set(copy.into());
            }
            init(debug, Mutex::new(f))
        }
        Err(_) => init(debug, std::io::stderr),
    }
}

/// A copy of the server's log fd, for a child's stderr.
pub fn server_log() -> Option<OwnedFd> {
    SERVER_LOG.get()?.try_clone().ok()
}

pub fn init_stderr(debug: bool) {
    init(debug, std::io::stderr);
}

/// The zygote's log: its stderr (the server's log), through a copy of that fd. The
/// processes libcontainer forks from the zygote put a container's stdio on 0-2 before they
/// exec; logging to fd 2 there would write into the container's own stderr (an exec's
/// output). The copy is close-on-exec, so no workload inherits it.
pub fn init_zygote(debug: bool) {
    use std::os::fd::AsFd;
    match std::io::stderr().as_fd().try_clone_to_owned() {
        Ok(fd) => init(debug, Mutex::new(std::fs::File::from(fd))),
        Err(_) => init(debug, std::io::stderr),
    }
}
