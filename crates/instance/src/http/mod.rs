//! The manager's HTTP API (probes, status, load-balancer checks, authenticated mutating
//! routes) and its separate metrics listener. Routes are declared per group with their
//! documentation, so the router and `docs/api/openapi.yaml` come from the same table.

pub mod admin;
pub mod auth;
pub mod backup;
pub mod error;
pub mod extract;
pub mod lb;
pub mod metrics_server;
pub mod openapi;
pub mod probes;
pub mod role;
pub mod server;
pub mod slots;
pub mod status;
pub mod synchronous;

pub use server::{router, AppState};
