//! Integration tests: one binary, the real server on port 0, real SQLite files, an embedded
//! S3 server over HTTP.

mod helpers;
mod instances;

mod answers;
mod backup;
mod browser;
mod catalog;
mod cli;
mod edge;
mod facebook;
mod facebook_security;
mod health;
mod jobs;
mod objects;
mod operations;
mod pages;
mod queue;
mod recovery;
mod shopify;
mod shopify_webhook;
