//! The life of one process (a container's init or an exec): which calls are valid when, and
//! the bookkeeping of its exit.
//!
//! ```text
//!  Created ──start──▶ Starting ──▶ Running ◀──resume── Paused
//!     │                  │            │ └───pause───────▲ │
//!     └──────exit────────┴────exit────┴────exit───────────┘──▶ Stopped ──delete──▶ Deleted
//! ```
//! `Starting` exists because containerd must see TaskStart (or TaskExecStarted) before the
//! process's TaskExit: an exit that arrives while Start is still under way is recorded at
//! once (Wait and State see it) but its event is held until Start has published its own.

use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Created,
    Starting,
    Running,
    Paused,
    Stopped,
    Deleted,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Created => "created",
            Phase::Starting => "starting",
            Phase::Running => "running",
            Phase::Paused => "paused",
            Phase::Stopped => "stopped",
            Phase::Deleted => "deleted",
        }
    }

    /// The process exists and has not exited (it may not have exec'd its workload yet).
    pub fn is_alive(self) -> bool {
        matches!(
            self,
            Phase::Created | Phase::Starting | Phase::Running | Phase::Paused
        )
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A call that the process's phase does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} {subject}: it is {phase}")]
pub struct TransitionError {
    pub action: &'static str,
    pub subject: String,
    pub phase: Phase,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExitStatus {
    pub code: u32,
    pub at: Timestamp,
}

/// What to do with an exit just recorded.
#[derive(Debug, PartialEq)]
pub enum ExitOutcome {
    /// Publish TaskExit now.
    Publish,
    /// Start is under way: [`Lifecycle::finish_start`] hands the exit back.
    Held,
    /// The process had already exited (or was deleted): nothing to publish.
    Ignored,
}

#[derive(Debug)]
pub struct Lifecycle {
    /// Names the process in errors ("container c1", "exec e1 of container c1").
    subject: String,
    phase: Phase,
    /// Set once, when the process exits; Wait subscribes to it.
    exit: watch::Sender<Option<ExitStatus>>,
    held_exit: bool,
}

impl Lifecycle {
    pub fn new(subject: String) -> Lifecycle {
        Lifecycle {
            subject,
            phase: Phase::Created,
            exit: watch::channel(None).0,
            held_exit: false,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn exit(&self) -> Option<ExitStatus> {
        self.exit.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Option<ExitStatus>> {
        self.exit.subscribe()
    }

    fn refuse(&self, action: &'static str) -> TransitionError {
        TransitionError {
            action,
            subject: self.subject.clone(),
            phase: self.phase,
        }
    }

    fn transition(
        &mut self,
        action: &'static str,
        from: &[Phase],
        to: Phase,
    ) -> Result<(), TransitionError> {
        if !from.contains(&self.phase) {
            return Err(self.refuse(action));
        }
        self.phase = to;
        Ok(())
    }

    pub fn begin_start(&mut self) -> Result<(), TransitionError> {
        self.transition("start", &[Phase::Created], Phase::Starting)
    }

    /// End Start (`started`: whether the process now runs). Returns an exit that arrived
    /// while starting, for the caller to publish after its own event.
    pub fn finish_start(&mut self, started: bool) -> Option<ExitStatus> {
        if self.phase == Phase::Starting {
            self.phase = if started {
                Phase::Running
            } else {
                Phase::Created
            };
        }
        if std::mem::take(&mut self.held_exit) {
            self.exit()
        } else {
            None
        }
    }

    pub fn pause(&mut self) -> Result<(), TransitionError> {
        self.transition("pause", &[Phase::Running], Phase::Paused)
    }

    pub fn resume(&mut self) -> Result<(), TransitionError> {
        self.transition("resume", &[Phase::Paused], Phase::Running)
    }

    /// Whether Delete may proceed: never while the process runs.
    pub fn check_delete(&self) -> Result<(), TransitionError> {
        match self.phase {
            Phase::Created | Phase::Stopped => Ok(()),
            _ => Err(self.refuse("delete")),
        }
    }

    pub fn mark_deleted(&mut self) -> Result<(), TransitionError> {
        self.check_delete()?;
        self.phase = Phase::Deleted;
        Ok(())
    }

    /// Record the process's exit (the first one counts).
    pub fn exited(&mut self, status: ExitStatus) -> ExitOutcome {
        if !self.phase.is_alive() {
            return ExitOutcome::Ignored;
        }
        let starting = self.phase == Phase::Starting;
        self.phase = Phase::Stopped;
        self.exit.send_replace(Some(status));
        if starting {
            self.held_exit = true;
            ExitOutcome::Held
        } else {
            ExitOutcome::Publish
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u32) -> ExitStatus {
        ExitStatus {
            code,
            at: Timestamp::default(),
        }
    }

    #[test]
    fn the_happy_path_runs_through_every_phase() {
        let mut l = Lifecycle::new("container c1".into());
        assert_eq!(l.phase(), Phase::Created);
        l.begin_start().unwrap();
        assert_eq!(l.finish_start(true), None);
        assert_eq!(l.phase(), Phase::Running);
        l.pause().unwrap();
        l.resume().unwrap();
        assert_eq!(l.exited(status(0)), ExitOutcome::Publish);
        assert_eq!(l.exit(), Some(status(0)));
        l.mark_deleted().unwrap();
        assert_eq!(l.phase(), Phase::Deleted);
    }

    #[test]
    fn invalid_transitions_are_refused_and_name_the_process() {
        let mut l = Lifecycle::new("exec e1 of container c1".into());
        let e = l.pause().unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot pause exec e1 of container c1: it is created"
        );
        assert!(l.resume().is_err());
        l.begin_start().unwrap();
        assert!(l.begin_start().is_err(), "a second start");
        assert!(l.check_delete().is_err(), "delete while starting");
        l.finish_start(true);
        assert!(l.check_delete().is_err(), "delete while running");
        l.pause().unwrap();
        assert!(l.pause().is_err());
        assert!(l.mark_deleted().is_err(), "delete while paused");
        l.exited(status(137));
        assert!(l.begin_start().is_err(), "start after exit");
        assert!(l.resume().is_err(), "resume after exit");
        l.mark_deleted().unwrap();
        assert!(l.mark_deleted().is_err(), "a second delete");
    }

    #[test]
    fn an_exit_during_start_is_recorded_at_once_and_published_after_start() {
        let mut l = Lifecycle::new("container c1".into());
        let wait = l.subscribe();
        l.begin_start().unwrap();
        assert_eq!(l.exited(status(3)), ExitOutcome::Held);
        assert!(wait.has_changed().unwrap(), "Wait sees the exit at once");
        assert_eq!(l.phase(), Phase::Stopped);
        assert_eq!(l.finish_start(true), Some(status(3)));
        assert_eq!(l.phase(), Phase::Stopped, "stays stopped");
        assert_eq!(l.finish_start(true), None, "handed back once");
    }

    #[test]
    fn a_failed_start_returns_to_created_and_a_created_process_can_be_deleted() {
        let mut l = Lifecycle::new("container c1".into());
        l.begin_start().unwrap();
        assert_eq!(l.finish_start(false), None);
        assert_eq!(l.phase(), Phase::Created);
        l.check_delete().unwrap();
    }

    #[test]
    fn only_the_first_exit_counts() {
        let mut l = Lifecycle::new("container c1".into());
        assert_eq!(l.exited(status(1)), ExitOutcome::Publish);
        assert_eq!(l.exited(status(2)), ExitOutcome::Ignored);
        assert_eq!(l.exit(), Some(status(1)));
    }
}
