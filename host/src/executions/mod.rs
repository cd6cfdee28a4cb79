//! Execution records: one run of a workflow on a backend (DIM, Slurm, or any
//! other), its state machine, its backend profile and its run record, and
//! the debug fields that provider plugins add when one execution is read.
//!
//! - [`ExecutionState`] and [`ExecutionState::can_become`]: the only
//!   transitions allowed (`pending → submitted → running → completed |
//!   failed | cancelled`, with the shortcuts listed there).
//! - `profile`: the backend profile (DIM manager URL or host/port/https;
//!   Slurm login node, remote user, session dir, job id), validated, and how
//!   an execution is handed to debug-field providers (`attributes` keys).
//! - `input`: the create, update and run-record bodies, validated.
//! - `service`: create, update and run-record appends as compare-and-swap
//!   on the stored row, each state change with its
//!   `vigil.ExecutionStateChanged` event in the same transaction.
//! - `debug_fields`: calling the providers concurrently within one budget.
//!
//! Does not own HTTP (`api::executions`) or SQL (`store::executions`).

pub mod debug_fields;
pub mod input;
pub mod profile;
pub mod service;

use serde::Serialize;

use crate::metrics::model::ItemError;
use crate::store::StoreError;

/// The event type every state change is logged as.
pub const STATE_CHANGED_EVENT: &str = "vigil.ExecutionStateChanged";

/// Where an execution is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExecutionState {
    Pending,
    Submitted,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl ExecutionState {
    pub const ALL: [ExecutionState; 6] = [
        ExecutionState::Pending,
        ExecutionState::Submitted,
        ExecutionState::Running,
        ExecutionState::Completed,
        ExecutionState::Failed,
        ExecutionState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ExecutionState::Pending => "pending",
            ExecutionState::Submitted => "submitted",
            ExecutionState::Running => "running",
            ExecutionState::Completed => "completed",
            ExecutionState::Failed => "failed",
            ExecutionState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<ExecutionState> {
        Self::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Completed, failed and cancelled are final.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            ExecutionState::Completed | ExecutionState::Failed | ExecutionState::Cancelled
        )
    }

    /// Whether an execution in `self` may move to `next`. A run goes
    /// pending → submitted → running → completed; it may be seen running
    /// without having been seen submitted, or finish before it was seen
    /// running (a short job between two polls); it may fail or be cancelled
    /// from any state that is not final. It never completes before it was
    /// submitted, and nothing leaves a final state.
    pub fn can_become(self, next: ExecutionState) -> bool {
        use ExecutionState::*;
        matches!(
            (self, next),
            (Pending, Submitted | Running | Failed | Cancelled)
                | (Submitted, Running | Completed | Failed | Cancelled)
                | (Running, Completed | Failed | Cancelled)
        )
    }

    /// The states `self` may move to, for error messages.
    pub fn next_states(self) -> Vec<&'static str> {
        Self::ALL
            .into_iter()
            .filter(|n| self.can_become(*n))
            .map(ExecutionState::as_str)
            .collect()
    }
}

/// Why an execution operation did not happen. Nothing is written in any case.
#[derive(Debug, thiserror::Error)]
pub enum ExecutionError {
    #[error("invalid execution body")]
    Invalid(Vec<ItemError>),
    #[error("{0}")]
    TooLarge(String),
    #[error("no execution `{0}`")]
    NotFound(String),
    #[error("an execution `{0}` exists already")]
    Exists(String),
    #[error("execution `{id}` is `{from}`; it cannot become `{to}` ({allowed})")]
    Transition {
        id: String,
        from: &'static str,
        to: &'static str,
        allowed: String,
    },
    #[error("execution `{0}` kept changing under this update; try again")]
    Contended(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ExecutionError {
    pub(crate) fn transition(id: &str, from: ExecutionState, to: ExecutionState) -> Self {
        let next = from.next_states();
        ExecutionError::Transition {
            id: id.to_string(),
            from: from.as_str(),
            to: to.as_str(),
            allowed: if next.is_empty() {
                format!("`{}` is final", from.as_str())
            } else {
                format!("from `{}` it may become {}", from.as_str(), next.join(", "))
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::ExecutionState::{self, *};

    #[test]
    fn only_sensible_transitions_are_allowed() {
        let allowed: Vec<(ExecutionState, ExecutionState)> = ExecutionState::ALL
            .into_iter()
            .flat_map(|a| ExecutionState::ALL.into_iter().map(move |b| (a, b)))
            .filter(|(a, b)| a.can_become(*b))
            .collect();
        assert_eq!(
            allowed,
            vec![
                (Pending, Submitted),
                (Pending, Running),
                (Pending, Failed),
                (Pending, Cancelled),
                (Submitted, Running),
                (Submitted, Completed),
                (Submitted, Failed),
                (Submitted, Cancelled),
                (Running, Completed),
                (Running, Failed),
                (Running, Cancelled),
            ]
        );
        for s in ExecutionState::ALL {
            assert_eq!(ExecutionState::parse(s.as_str()), Some(s));
            assert!(
                !s.can_become(s),
                "{s:?} to itself is a no-op, not a transition"
            );
        }
        assert!(Completed.next_states().is_empty());
    }
}
