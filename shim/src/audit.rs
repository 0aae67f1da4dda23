//! Writes hardening decisions to the profile's audit log (format: stockade_runtime::audit).

use stockade_runtime::audit::{AuditEvent, AuditLog};
use stockade_runtime::profile::Profile;

/// Append `event` to the profile's audit log, if it has one; failures are logged, never
/// fatal (the decision itself already stands).
pub fn record(profile: &Profile, event: AuditEvent) {
    match AuditLog::from_profile(profile) {
        Ok(Some(log)) => {
            if let Err(e) = log.record(&event) {
                tracing::warn!(error = %e, "audit log write failed");
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(error = %e, "audit log unavailable"),
    }
}
