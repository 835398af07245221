//! Meta: the Graph API client and Meta's signatures (webhook deliveries, `signed_request`).

pub mod client;
pub mod signature;
