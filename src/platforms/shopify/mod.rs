//! Shopify: the HTTP client (OAuth token endpoint, GraphQL with throttling and retries), the
//! Admin API with each shop's token kept fresh, and Shopify's two signatures.

pub mod api;
pub mod client;
pub mod signature;
