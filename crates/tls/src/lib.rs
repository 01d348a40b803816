//! TLS for pgsteward's HTTP APIs, shared by the instance manager and the coordinator:
//! `server` (a rustls acceptor from PEM files and the accept loop that hands each TLS stream
//! to an axum router) and `client` (a hyper connector for `http://` and `https://` URLs that
//! trusts a PEM CA bundle, or the system's roots). rustls with the ring provider throughout.

pub mod client;
pub mod server;
