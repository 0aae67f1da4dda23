//! The shim's side of its zygote ([`super::zygote`]): requests go to it one at a time; a
//! zygote left idle goes, and the next request starts a new one.
//!
//! A pod's containers are created within moments of each other and then run for hours
//! with nothing for the zygote to do, while it keeps a second copy of the shim in memory
//! (8 MB resident, 0.7 MB of it its own). So once idle for [`IdlePolicy::idle`] its socket
//! is closed and it exits; Exec, Kill, Delete or a new container later exec this binary
//! afresh as the next zygote (a few milliseconds: no fork of the multi-threaded shim). A
//! pod that keeps needing it soon after it went (exec probes) keeps it longer each time.

use std::collections::HashSet;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, TryLockError};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use tokio::sync::Notify;

use super::zygote::{self, Answer};
use super::{Launcher, Request};

/// How long the shim goes without a request before it trims its heap.
const TRIM_AFTER: Duration = Duration::from_millis(100);

/// How long a zygote stays idle before it goes, at first.
const FIRST_IDLE: Duration = Duration::from_secs(1);
/// The longest a pod that keeps needing its zygote keeps it idle.
const MAX_IDLE: Duration = Duration::from_secs(64);
/// A zygote needed again this soon after it went stays idle twice as long from then on.
const SOON: Duration = Duration::from_secs(30);

/// How long an idle zygote is kept: [`FIRST_IDLE`], doubled (up to [`MAX_IDLE`]) each time
/// one is needed within [`SOON`] of the last one going. Pure, for the tests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdlePolicy {
    idle: Duration,
    gone_at: Option<Instant>,
}

impl Default for IdlePolicy {
    fn default() -> Self {
        IdlePolicy {
            idle: FIRST_IDLE,
            gone_at: None,
        }
    }
}

impl IdlePolicy {
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// The zygote went at `now`.
    pub fn gone(&mut self, now: Instant) {
        self.gone_at = Some(now);
    }

    /// A new zygote was needed at `now`.
    pub fn needed(&mut self, now: Instant) {
        if self
            .gone_at
            .is_some_and(|at| now.saturating_duration_since(at) < SOON)
        {
            self.idle = (self.idle * 2).min(MAX_IDLE);
        }
    }
}

struct Helper {
    sock: OwnedFd,
    pid: i32,
}

struct Slot {
    helper: Option<Helper>,
    last_used: Instant,
    policy: IdlePolicy,
}

/// The shim's zygote: the one running now, if any, and how to start the next.
pub struct Zygote {
    /// Held for a whole exchange (on a blocking thread): one request at a time.
    slot: Arc<Mutex<Slot>>,
    /// Zygotes started and not yet reported exited by the reaper. Apart from `slot`, so
    /// the reaper never waits for an exchange.
    unreaped: Arc<Mutex<HashSet<i32>>>,
    used: Arc<Notify>,
    /// The server's flags: an exec'd zygote carries them too (`-socket` marks the pod's
    /// processes for `shim delete`, see dead_server.rs).
    args: Arc<Vec<OsString>>,
}

impl Zygote {
    /// Fork the first zygote. Must be called while the process is still single-threaded;
    /// `close_in_child`: the server's fds the zygote must not keep.
    pub fn fork(close_in_child: &[RawFd], args: Vec<OsString>) -> anyhow::Result<Zygote> {
        let (parent, child) = zygote::socketpair_for_zygote()?;
        let pid = zygote::fork(child, &parent, close_in_child)?;
        let z = Zygote {
            slot: Arc::new(Mutex::new(Slot {
                helper: Some(Helper { sock: parent, pid }),
                last_used: Instant::now(),
                policy: IdlePolicy::default(),
            })),
            unreaped: Arc::new(Mutex::new(HashSet::from([pid]))),
            used: Arc::new(Notify::new()),
            args: Arc::new(args),
        };
        // Its idle time counts from now.
        z.used.notify_one();
        Ok(z)
    }

    /// Close the zygote's socket once it has been idle long enough (it exits on EOF), and
    /// before that trim the shim's heap ([`Zygote::trim_when_quiet`]); runs for the shim's
    /// lifetime, waking only while a zygote runs.
    pub async fn retire_when_idle(self: Arc<Self>) {
        loop {
            self.used.notified().await;
            self.trim_when_quiet().await;
            loop {
                match self.try_retire() {
                    Idle::Gone => break,
                    Idle::Busy => tokio::time::sleep(FIRST_IDLE).await,
                    Idle::For(left) => tokio::time::sleep(left).await,
                }
            }
        }
    }

    /// Hands the heap's free pages back to the kernel once no request has come for
    /// [`TRIM_AFTER`]. Not after each request: a Create is four requests in a row, and a
    /// trim holds the (single) malloc arena's lock while it walks the heap, and the pages
    /// it gives back fault in again at the next request's allocations.
    async fn trim_when_quiet(&self) {
        loop {
            tokio::time::sleep(TRIM_AFTER).await;
            match self.slot.try_lock() {
                Ok(slot) if slot.last_used.elapsed() >= TRIM_AFTER => break,
                Ok(_) | Err(TryLockError::WouldBlock) => continue,
                Err(TryLockError::Poisoned(_)) => return,
            }
        }
        let _ = tokio::task::spawn_blocking(crate::memory::trim).await;
    }

    fn try_retire(&self) -> Idle {
        let mut slot = match self.slot.try_lock() {
            Ok(slot) => slot,
            // An exchange runs now: not idle.
            Err(TryLockError::WouldBlock) => return Idle::Busy,
            // A request panicked: every later one fails anyway, nothing to wake for.
            Err(TryLockError::Poisoned(_)) => return Idle::Gone,
        };
        let Some(helper) = &slot.helper else {
            return Idle::Gone;
        };
        let idle = slot.policy.idle();
        let since = slot.last_used.elapsed();
        if since < idle {
            return Idle::For(idle - since);
        }
        tracing::debug!(pid = helper.pid, idle = ?idle, "zygote idle: it goes");
        slot.helper = None;
        slot.policy.gone(Instant::now());
        Idle::Gone
    }
}

enum Idle {
    Gone,
    Busy,
    For(Duration),
}

/// The next zygote: this binary exec'd with the zygote action, its socket as fd 3, its
/// stderr the server's log. Called on a blocking thread of the multi-threaded shim, so
/// the child only dup2s before exec.
fn exec_zygote(args: &[OsString], unreaped: &Mutex<HashSet<i32>>) -> anyhow::Result<Helper> {
    let (parent, child) = zygote::socketpair_for_zygote()?;
    let log = match crate::logging::server_log() {
        Some(fd) => Stdio::from(fd),
        None => Stdio::null(),
    };
    let mut cmd = Command::new("/proc/self/exe");
    cmd.args(args)
        .arg(zygote::ACTION)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    let fd = child.as_raw_fd();
    // SAFETY: runs in the child between fork and exec, calling only dup2 and fcntl, which
    // are async-signal-safe, on fds the child owns.
    unsafe {
        cmd.pre_exec(move || {
            let ok = if fd == zygote::SOCKET_FD {
                libc::fcntl(fd, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(fd, zygote::SOCKET_FD) == zygote::SOCKET_FD
            };
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    // Held across the spawn: the reaper must not see the exit before the pid is known.
    let mut unreaped = unreaped
        .lock()
        .map_err(|_| anyhow::anyhow!("zygote pid set poisoned"))?;
    let started = cmd.spawn().context("starting a zygote")?;
    let pid = i32::try_from(started.id()).context("zygote pid")?;
    unreaped.insert(pid);
    tracing::debug!(pid, "zygote started");
    Ok(Helper { sock: parent, pid })
}

/// One request on the pod's zygote, starting one first if none runs (blocking).
fn request(
    slot: &Mutex<Slot>,
    unreaped: &Mutex<HashSet<i32>>,
    args: &[OsString],
    req: &Request,
    fds: &[OwnedFd],
) -> anyhow::Result<Option<i32>> {
    let mut slot = slot
        .lock()
        .map_err(|_| anyhow::anyhow!("zygote channel poisoned"))?;
    let helper = match slot.helper.take() {
        Some(helper) => helper,
        None => {
            let helper = exec_zygote(args, unreaped)?;
            slot.policy.needed(Instant::now());
            helper
        }
    };
    let answer: Answer = zygote::exchange(&helper.sock, req, fds);
    slot.last_used = Instant::now();
    match answer {
        Ok(result) => {
            slot.helper = Some(helper);
            result.map_err(anyhow::Error::msg)
        }
        // Gone or unusable: dropped (its socket closed), the next request starts another.
        Err(e) => Err(e),
    }
}

#[async_trait]
impl Launcher for Zygote {
    /// Runs the blocking exchange on tokio's blocking pool.
    async fn call(&self, req: Request, fds: Vec<OwnedFd>) -> anyhow::Result<Option<i32>> {
        let (slot, unreaped, args) = (self.slot.clone(), self.unreaped.clone(), self.args.clone());
        let result =
            tokio::task::spawn_blocking(move || request(&slot, &unreaped, &args, &req, &fds))
                .await
                .context("zygote request task");
        self.used.notify_one();
        result?
    }

    fn helper_exited(&self, pid: i32) -> bool {
        self.unreaped.lock().is_ok_and(|mut u| u.remove(&pid))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_idle_zygote_goes_after_a_second_and_a_pod_that_keeps_needing_it_keeps_it_longer() {
        let t0 = Instant::now();
        let mut p = IdlePolicy::default();
        assert_eq!(p.idle(), Duration::from_secs(1));
        // The first zygote of a pod: nothing went before it.
        p.needed(t0);
        assert_eq!(p.idle(), Duration::from_secs(1));
        // Needed again 10 s after it went (an exec probe): twice as long each time...
        let mut now = t0;
        for expected in [2, 4, 8, 16, 32, 64, 64] {
            p.gone(now);
            now += Duration::from_secs(10);
            p.needed(now);
            assert_eq!(p.idle(), Duration::from_secs(expected));
        }
        // ...but not when it was needed again long after it went (Stop, hours later).
        let mut q = IdlePolicy::default();
        q.gone(t0);
        q.needed(t0 + Duration::from_secs(3600));
        assert_eq!(q.idle(), Duration::from_secs(1));
    }
}
