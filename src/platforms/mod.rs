//! The platforms' HTTP APIs, below the application state so it can hold their clients and the
//! domain modules can reach them through it: Shopify's OAuth token endpoint and GraphQL Admin
//! API (with the shops' token management) and Meta's Graph API, plus both platforms' request
//! signatures (checked by the routes, made by the self-tests and the simulators).
//!
//! What is asked of the platforms (the GraphQL queries, which pages and conversations) and
//! what is done with the answers is the domain's (`shopify`, `facebook`).

pub mod facebook;
pub mod shopify;
