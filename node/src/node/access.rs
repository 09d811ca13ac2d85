//! The first administrator: taken from `--bootstrap-admin` while the cluster has none.

use super::*;

/// The actor of the bootstrap admin grant.
pub const BOOTSTRAP_ACTOR: &str = "system/bootstrap";

impl Node {
    /// While the replicated role map holds no admin, proposes `principal` as the first one
    /// (`Command::BootstrapAdmin`). The model refuses it once any admin exists, and keeps one
    /// from then on, so every node given the flag may propose it, on every start, and only the
    /// first proposal applied takes effect (ARCHITECTURE.md, "Roles and audit"). Returns once
    /// the cluster has an admin, or the node stops.
    pub async fn bootstrap_admin(&self, principal: String) {
        let mut metrics = self.raft().metrics();
        loop {
            if self.view().read(|a| a.state.admins() > 0) {
                return;
            }
            let leader_known = metrics.borrow_and_update().current_leader.is_some();
            if leader_known {
                let command = Command::BootstrapAdmin {
                    principal: principal.clone(),
                };
                match self.write(BOOTSTRAP_ACTOR, command).await {
                    Ok(_) => {
                        tracing::info!(principal, "made the bootstrap admin the first admin");
                        return;
                    }
                    Err(ApiError::Rejected(rejection)) => {
                        tracing::info!(
                            principal,
                            reason = %rejection,
                            "the bootstrap admin was not needed"
                        );
                        return;
                    }
                    Err(e) => tracing::debug!(error = %e, "the bootstrap admin will be retried"),
                }
            }
            let retry = Instant::now() + Duration::from_millis(LEADER_RETRY_INTERVAL_MS * 4);
            if tokio::time::timeout_at(retry, metrics.changed())
                .await
                .is_ok_and(|changed| changed.is_err())
            {
                return;
            }
        }
    }
}
