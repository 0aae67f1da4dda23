//! A small mount namespace for libcontainer's steps.
//!
//! Creating one container reads the whole of /proc/self/mountinfo several times:
//! libcgroups' v1 manager reads it (once per manager since third_party/libcgroups' patch,
//! once per controller before) in the zygote and again in libcontainer's intermediate
//! process, and the init reads it twice after copying the zygote's mount namespace. With
//! 250 pods the node's table holds a thousand mounts, most of them other pods' overlays,
//! whose options the kernel escapes character by character on every read. So the zygote
//! creates, execs into, signals and deletes containers in a namespace that holds only what
//! those steps touch, at the same paths, and returns to the node's namespace after each
//! step.
//!
//! The zygote makes that namespace once, from a copy of the node's, with what every step
//! touches ([`paths::always`]), and keeps it. Each step lends it the few paths of its own
//! container (the bundle, libcontainer's state, the spec's mount sources, the console
//! socket), cloned from the node's namespace, and takes them back afterwards. Making a
//! fresh copy for every step costs time in proportion to the node's mount table (copying
//! it, making it a slave, detaching it: three walks of every mount on the node); lending
//! costs the same on a full node as on an empty one.
//!
//! The namespace is a slave of the node's: nothing done there reaches the node, and mounts
//! the node adds later under what it holds still propagate into it and into the containers
//! made from it (volumes with HostToContainer propagation).

mod paths;
mod tree;

use std::cell::RefCell;
use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::{setns, unshare, CloneFlags};

pub use paths::{for_container, needed_paths};

/// The zygote's two namespaces, as open files.
struct Kept {
    node: File,
    lean: File,
}

enum State {
    Unmade,
    Kept(Kept),
    /// Making it failed (said once, as a warning): steps run in the node's namespace.
    Unusable,
}

thread_local! {
    // The zygote is single-threaded: this is per process.
    static STATE: RefCell<State> = const { RefCell::new(State::Unmade) };
}

/// Makes the kept namespace now, if it is not made yet: a zygote calls this as it starts,
/// so that the cost of copying the node's table is paid while the shim is still deciding
/// and mounting the first container's rootfs, not inside its create.
pub fn prepare() {
    let _ = kept();
}

/// Runs `f` in the kept namespace with `needed` (at their paths) lent to it, then returns
/// the calling process to its own namespace. The process must be single-threaded. Where
/// the namespace cannot be used, `f` runs in the process's own namespace: this only saves
/// time, it changes nothing `f` does.
pub fn run_in<T>(
    op: &'static str,
    needed: &[PathBuf],
    f: impl FnOnce() -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let (result, stay) = run_staying(op, needed, f);
    stay.end();
    result
}

/// A step's stay in the kept namespace, once its work is done: ending it takes back what
/// was lent and returns the process to the node's namespace. A stay that is dropped ends
/// then: the zygote never serves another request from the kept namespace.
#[must_use = "the process stays in the kept namespace until the stay ends"]
pub struct Stay {
    op: &'static str,
    inside: Option<Inside>,
}

struct Inside {
    lent: tree::Lent,
    node: File,
    cwd: Option<PathBuf>,
}

impl Stay {
    /// The process never left its own namespace.
    pub fn none(op: &'static str) -> Stay {
        Stay { op, inside: None }
    }

    pub fn end(self) {
        drop(self);
    }
}

impl Drop for Stay {
    fn drop(&mut self) {
        if let Some(inside) = self.inside.take() {
            give_back(self.op, inside.lent);
            return_to(&inside.node, inside.cwd.as_deref());
        }
    }
}

/// As [`run_in`], but the process is left in the kept namespace until the returned
/// [`Stay`] ends: a Create answers the shim first, and the taking back (an unmount per
/// lent path, a setns) happens while the shim goes on.
pub fn run_staying<T>(
    op: &'static str,
    needed: &[PathBuf],
    f: impl FnOnce() -> anyhow::Result<T>,
) -> (anyhow::Result<T>, Stay) {
    let Some(extra) = paths::beyond_always(needed) else {
        tracing::debug!(
            op,
            "a path holds part of the kept mount namespace: working in the node's"
        );
        return (f(), Stay::none(op));
    };
    let Some(kept) = kept() else {
        return (f(), Stay::none(op));
    };
    let trees = match tree::clone_all(&extra) {
        Ok(trees) => trees,
        Err(e) => {
            tracing::warn!(op, error = %format!("{e:#}"), "working in the node's mount namespace instead");
            return (f(), Stay::none(op));
        }
    };
    let cwd = std::env::current_dir().ok();
    if let Err(e) = setns(&kept.lean, CloneFlags::CLONE_NEWNS) {
        tracing::warn!(op, error = %e, "cannot enter the kept mount namespace; working in the node's");
        forget(State::Unusable);
        return (f(), Stay::none(op));
    }
    let mut lent = tree::Lent::default();
    let lend = lent.lend(trees);
    let lent_count = lent.count();
    let stay = Stay {
        op,
        inside: Some(Inside {
            lent,
            node: kept.node,
            cwd,
        }),
    };
    if let Err(e) = lend {
        tracing::warn!(op, error = %format!("{e:#}"), "working in the node's mount namespace instead");
        stay.end();
        return (f(), Stay::none(op));
    }
    if tracing::enabled!(tracing::Level::DEBUG) {
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")
            .map(|t| t.lines().count())
            .unwrap_or(0);
        tracing::debug!(
            op,
            lent = lent_count,
            mounts,
            "in a mount namespace of its own"
        );
    }
    (f(), stay)
}

/// What was lent goes back; where it cannot, the namespace is dropped (a later step makes
/// a new one) rather than kept with another container's mounts in it.
fn give_back(op: &str, lent: tree::Lent) {
    if let Err(e) = lent.take_back() {
        tracing::warn!(op, error = %format!("{e:#}"), "dropping the kept mount namespace");
        forget(State::Unmade);
    }
}

fn forget(next: State) {
    STATE.with(|s| *s.borrow_mut() = next);
}

/// The kept namespaces (copies of the files, so that no borrow outlives this call),
/// made on first use.
fn kept() -> Option<Kept> {
    STATE.with(|s| {
        let mut s = s.borrow_mut();
        if matches!(*s, State::Unmade) {
            *s = match make() {
                Ok(k) => State::Kept(k),
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "no mount namespace of its own: working in the node's");
                    State::Unusable
                }
            };
        }
        match &*s {
            State::Kept(k) => k.try_clone(),
            _ => None,
        }
    })
}

impl Kept {
    fn try_clone(&self) -> Option<Kept> {
        Some(Kept {
            node: self.node.try_clone().ok()?,
            lean: self.lean.try_clone().ok()?,
        })
    }
}

/// Makes the kept namespace and returns to the node's.
fn make() -> anyhow::Result<Kept> {
    use anyhow::Context;
    let node =
        File::open("/proc/thread-self/ns/mnt").context("opening the node's mount namespace")?;
    let cwd = std::env::current_dir().ok();
    unshare(CloneFlags::CLONE_NEWNS).context("unsharing the mount namespace (threads?)")?;
    let made = tree::make(&paths::always()).and_then(|kept| {
        tracing::debug!(kept, "made the kept mount namespace");
        File::open("/proc/thread-self/ns/mnt").context("opening the kept namespace")
    });
    return_to(&node, cwd.as_deref());
    Ok(Kept { node, lean: made? })
}

fn return_to(node: &File, cwd: Option<&Path>) {
    if let Err(e) = setns(node, CloneFlags::CLONE_NEWNS) {
        // Never serve another request from the wrong namespace.
        tracing::error!(error = %e, "cannot return to the zygote's mount namespace");
        std::process::exit(1);
    }
    if let Some(cwd) = cwd {
        let _ = std::env::set_current_dir(cwd);
    }
}
