//! Simulated Shopify Admin and Meta Graph APIs on loopback ports.
//!
//! salesbot-sync's integration tests and benchmarks drive the service against these (through
//! `SHOPIFY_SHOP_URL_TEMPLATE` and `FACEBOOK_GRAPH_BASE_URL`), and `salesbot-sync demo` runs
//! the real service against them. One simulator per platform, shared by all three: shaped as
//! the platforms document their APIs, stateful, with failure injection for tests.
//!
//! The fakes sign what they send with [`signing`], written from the platforms' documentation
//! and checked against their published vectors: this crate does not depend on the service, so
//! a signing bug in the service cannot be mirrored here and hidden from its tests.

pub mod graph;
pub mod shopify;
pub mod signing;

mod http;
mod ids;
