//! The `delete` action: containerd calls it when the shim is gone, to undo what Create did
//! from the state on disk (the bundle's stockade.json and libcontainer's state).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use containerd_shim::Flags;
use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::{Message, MessageField};
use libcontainer::container::Container;
use libcontainer::signal::Signal as LcSignal;
use stockade_runtime::state_dir::StateDir;

use crate::dead_server::DeadServer;
use crate::host::{self, RealHost};
use crate::launcher::container;
use crate::state::{self, Record};
use crate::{binds, logging};

pub fn run(flags: &Flags, state_dir: &StateDir) -> anyhow::Result<()> {
    logging::init_stderr(flags.debug);
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().context("current directory")?
    } else {
        PathBuf::from(&flags.bundle)
    };
    // First the dead server's stragglers, so nothing recreates what is removed below.
    let dead = DeadServer::find(&bundle);
    if let Some(server) = &dead {
        server.kill_orphans();
    }
    let root = state::libcontainer_root(state_dir, &flags.namespace);
    let pid = delete_libcontainer_state(&root.join(&flags.id), &flags.id);
    container::unmount_rootfs(&bundle.join("rootfs"), &bundle.join(state::ROOTFS_STAGING))?;
    binds::unstage(&bundle);
    let failure = match Record::load(&bundle)? {
        Some(record) => undo(state_dir, &flags.id, &bundle, &record).err(),
        None => {
            tracing::debug!(bundle = %bundle.display(), "no record of what Create did");
            None
        }
    };
    let _ = std::fs::remove_file(bundle.join(state::SECCOMP_FILE));
    let _ = stockade_runtime::node_state::remove(&state_dir.containers(), &flags.id);
    if let Some(server) = &dead {
        server.remove_socket();
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let resp = DeleteResponse {
        pid: u32::try_from(pid).unwrap_or(0),
        exit_status: 128 + 9,
        exited_at: MessageField::some(crate::task::now()),
        ..Default::default()
    };
    std::io::stdout().write_all(&resp.write_to_bytes()?)?;
    Ok(())
}

/// Kill what libcontainer's state names and remove the state; returns the init's pid (0
/// when there was none).
fn delete_libcontainer_state(dir: &Path, id: &str) -> i32 {
    if !dir.exists() {
        return 0;
    }
    let mut c = match Container::load(dir.to_path_buf()) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable libcontainer state, removing it");
            let _ = std::fs::remove_dir_all(dir);
            return 0;
        }
    };
    let pid = c.pid().map(|p| p.as_raw()).unwrap_or(0);
    if pid > 0 && host::is_alive(pid) {
        tracing::info!(container = %id, pid, "killing what the dead shim left running");
    }
    if let Ok(sig) = LcSignal::try_from(9) {
        if let Err(e) = c.kill(sig, true) {
            tracing::debug!(error = %e, "kill during cleanup");
        }
    }
    if let Err(e) = c.delete(true) {
        tracing::warn!(error = %e, "libcontainer delete failed, removing state");
        let _ = std::fs::remove_dir_all(dir);
    }
    pid
}

/// The record's undo, with the ID pool of the profile it names. The sweep matters when
/// libcontainer's delete failed half-way (a Create interrupted inside libcontainer leaves
/// the cgroup frozen with processes in it).
fn undo(state_dir: &StateDir, id: &str, bundle: &Path, record: &Record) -> anyhow::Result<()> {
    let host = RealHost::new(state_dir.clone());
    host::undo_record(&host, id, bundle, record, || host::record_pool(record))
}
