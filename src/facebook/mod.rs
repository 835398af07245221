//! Facebook: Page OAuth connect, signed webhooks, Messenger conversations, polling, and Meta's
//! data deletion callback, as queued jobs.

pub mod answer;
pub mod changes;
pub mod conversations;
pub mod deletion;
pub mod disconnect;
pub mod jobs;
pub mod messages;
pub mod moves;
pub mod oauth;
pub mod pages;
pub mod process;
pub mod selftest;
pub mod webhook;
pub mod window;

use crate::config::{FacebookSettings, NotConfigured};
use crate::jobs::JobError;
use crate::objects::ObjectError;
use crate::platforms::facebook::client::{GraphClient, GraphError};
use crate::state::AppState;
use crate::store::StoreError;

pub fn settings(state: &AppState) -> Result<&FacebookSettings, NotConfigured> {
    state.config.facebook.as_ref().ok_or(NotConfigured(
        "Facebook is not configured: set FACEBOOK_APP_ID, FACEBOOK_APP_SECRET and FACEBOOK_VERIFY_TOKEN",
    ))
}

/// The configured app's Graph client, for work on pages.
pub fn graph(state: &AppState) -> Result<&GraphClient, FbError> {
    state.graph.as_ref().ok_or(FbError::NotConfigured)
}

/// What stops work on a page, and whether trying again can help.
#[derive(Debug, thiserror::Error)]
pub enum FbError {
    #[error("unknown page {0}: it is not connected")]
    UnknownPage(String),
    #[error("page {0} needs to be reconnected: {1}")]
    NeedsReauth(String, String),
    #[error("page {0} is being deleted")]
    Deleting(String),
    #[error("Facebook is not configured")]
    NotConfigured,
    #[error(transparent)]
    Graph(#[from] GraphError),
    #[error(transparent)]
    Objects(#[from] ObjectError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<FbError> for JobError {
    fn from(e: FbError) -> Self {
        match &e {
            FbError::Graph(GraphError::Transient(_)) | FbError::Objects(_) | FbError::Store(_) => {
                JobError::Retry(e.to_string())
            }
            _ => JobError::Permanent(e.to_string()),
        }
    }
}
