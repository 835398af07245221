//! What the two connect flows (Shopify's and Facebook's OAuth callbacks) share: the result of
//! each step their answers report, and what stops a flow.

use std::fmt::Display;

use serde::{Deserialize, Serialize};

use crate::config::NotConfigured;
use crate::oauth_state::StateError;
use crate::store::events::EnqueueError;
use crate::store::StoreError;

/// One step of a connect as its answer reports it (SPEC §4): `{"status": "success"}`,
/// `{"status": "failed" | "error", "message": …}` (with a `correlation_id` when the cause is
/// only logged), or `{"status": "pending"}` for work that goes on in the background. Also what
/// the connect's queued checks (the self-test verification) record as their result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "lowercase")]
pub enum Step {
    Success,
    /// Done, and it did not work out (a test that did not pass, a page refused).
    Failed {
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation_id: Option<String>,
    },
    /// Could not be done (a platform or a store failed).
    Error {
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        correlation_id: Option<String>,
    },
    Pending,
}

impl Step {
    pub fn failed(message: impl Display) -> Step {
        Step::Failed {
            message: message.to_string(),
            correlation_id: None,
        }
    }

    pub fn error(message: impl Display) -> Step {
        Step::Error {
            message: message.to_string(),
            correlation_id: None,
        }
    }

    /// A failure told in `plain` words; its cause — which may name keys, endpoints or SQL — is
    /// only logged, on a line with the correlation id the step carries.
    pub fn failed_incident(plain: &str, cause: &dyn Display) -> Step {
        let id = incident(plain, cause);
        Step::Failed {
            message: plain.to_string(),
            correlation_id: Some(id),
        }
    }

    /// As `failed_incident`, for a step that could not be done.
    pub fn error_incident(plain: &str, cause: &dyn Display) -> Step {
        let id = incident(plain, cause);
        Step::Error {
            message: plain.to_string(),
            correlation_id: Some(id),
        }
    }

    pub fn is_success(&self) -> bool {
        matches!(self, Step::Success)
    }

    pub fn is_pending(&self) -> bool {
        matches!(self, Step::Pending)
    }

    /// What went wrong, for a failed step.
    pub fn message(&self) -> Option<&str> {
        match self {
            Step::Failed { message, .. } | Step::Error { message, .. } => Some(message),
            Step::Success | Step::Pending => None,
        }
    }

    /// The id of the log line with the cause, for a failure whose cause is only logged.
    pub fn correlation_id(&self) -> Option<&str> {
        match self {
            Step::Failed { correlation_id, .. } | Step::Error { correlation_id, .. } => {
                correlation_id.as_deref()
            }
            Step::Success | Step::Pending => None,
        }
    }
}

fn incident(plain: &str, cause: &dyn Display) -> String {
    let id = crate::telemetry::correlation_id();
    tracing::warn!(correlation_id = %id, cause = %cause, "{plain}");
    id
}

/// What stops a connect flow (its login or its callback) before it can answer.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    NotConfigured(#[from] NotConfigured),
    /// A request or redirect the flow does not take, in words for the merchant.
    #[error("{0}")]
    Refused(String),
    /// A redirect whose signature does not verify.
    #[error("{0}")]
    Unsigned(String),
    #[error(transparent)]
    State(#[from] StateError),
    /// The platform refused a step (the code exchange, the token, the page list).
    #[error("{0}")]
    Upstream(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Enqueue(#[from] EnqueueError),
    /// A bug.
    #[error(transparent)]
    Internal(anyhow::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_read_back_what_they_wrote() {
        for step in [
            Step::Success,
            Step::Pending,
            Step::failed("Tests failed"),
            Step::error_incident("the job failed", &"cause"),
        ] {
            let v = serde_json::to_value(&step).unwrap();
            assert_eq!(serde_json::from_value::<Step>(v).unwrap(), step);
        }
        let failed: Step = serde_json::from_str(
            r#"{"message":"Conversation upload not found","status":"failed"}"#,
        )
        .unwrap();
        assert_eq!(failed.message(), Some("Conversation upload not found"));
        assert_eq!(failed.correlation_id(), None);
    }
}
