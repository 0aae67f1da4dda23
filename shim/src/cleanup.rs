//! The `delete` action: containerd calls it when the shim is gone, to undo what Create did
//! from the state on disk (the bundle's stockade.json and libcontainer's state).

use std::io::Write;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use containerd_shim::Flags;
use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};
use libcontainer::container::Container;
use libcontainer::signal::Signal;

use crate::state::{self, Record};
use crate::{binds, cgroups, container, podrange};

pub fn run(flags: &Flags) -> anyhow::Result<()> {
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().context("current directory")?
    } else {
        PathBuf::from(&flags.bundle)
    };
    let root = state::libcontainer_root(&flags.namespace);
    let dir = root.join(&flags.id);
    let mut pid = 0;
    if dir.exists() {
        match Container::load(dir.clone()) {
            Ok(mut c) => {
                pid = c.pid().map(|p| p.as_raw()).unwrap_or(0);
                if let Ok(sig) = Signal::try_from(9) {
                    if let Err(e) = c.kill(sig, true) {
                        tracing::debug!(error = %e, "kill during cleanup");
                    }
                }
                if let Err(e) = c.delete(true) {
                    tracing::warn!(error = %e, "libcontainer delete failed, removing state");
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "unreadable libcontainer state, removing it");
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    container::unmount_rootfs(&bundle.join("rootfs"), &bundle.join(state::ROOTFS_STAGING))?;
    binds::unstage(&bundle);
    if let Some(record) = Record::load(&bundle)? {
        if let Some(dir) = &record.pod_cgroup {
            cgroups::remove_empty(dir);
        }
        if record.is_sandbox {
            podrange::release(&record)?;
        }
        let _ = std::fs::remove_file(bundle.join(state::RECORD_FILE));
    }
    let _ = std::fs::remove_file(bundle.join(state::SECCOMP_FILE));
    let _ =
        stockade_runtime::node_state::remove(&crate::state::state_dir().containers(), &flags.id);

    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let resp = DeleteResponse {
        pid: u32::try_from(pid).unwrap_or(0),
        exit_status: 128 + 9,
        exited_at: MessageField::some(Timestamp {
            seconds: i64::try_from(d.as_secs()).unwrap_or(0),
            nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
            ..Default::default()
        }),
        ..Default::default()
    };
    std::io::stdout().write_all(&resp.write_to_bytes()?)?;
    Ok(())
}
