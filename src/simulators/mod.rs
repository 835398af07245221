//! Simulated Shopify Admin and Meta Graph APIs on loopback ports.
//!
//! The integration tests and the benchmarks drive the service against these (through
//! `SHOPIFY_SHOP_URL_TEMPLATE` and `FACEBOOK_GRAPH_BASE_URL`), and `salesbot-sync demo` runs
//! the real service against them. One simulator per platform, shared by all three: shaped as
//! the platforms document their APIs, stateful, with failure injection for tests.

pub mod graph;
pub mod shopify;
