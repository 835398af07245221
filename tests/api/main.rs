//! Integration tests: one binary, the real server on port 0, real SQLite files, an embedded
//! S3 server over HTTP.

mod helpers;

mod cli;
mod health;
mod objects;
mod queue;
mod shopify_webhook;
