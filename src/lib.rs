//! salesbot-sync: keeps merchants' Shopify and Facebook data fresh in S3-compatible storage.
//!
//! The binary (`src/main.rs`) is a thin shell over this library so that the integration tests
//! can start the real server in-process.

pub mod backup;
pub mod cli;
pub mod config;
pub mod connect;
pub mod crypto;
#[cfg(feature = "demo")]
pub mod demo;
pub mod error;
pub mod facebook;
pub mod fence;
pub mod ids;
pub mod jobs;
#[cfg(test)]
mod layers;
pub mod oauth_state;
pub mod objects;
pub mod platforms;
pub mod poll;
pub mod retry;
pub mod routes;
pub mod session;
pub mod shopify;
pub mod startup;
pub mod state;
pub mod store;
pub mod telemetry;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod web;
