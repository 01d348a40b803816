//! TLS for pgsteward's HTTP APIs, shared by the instance manager and the coordinator:
//! `server` (a rustls acceptor from PEM files, optionally verifying client certificates, and
//! the accept loop that hands each TLS stream to an axum router), `peer` (the verified client
//! certificate a request carries), `client` (a hyper connector for `http://` and `https://`
//! URLs that trusts a PEM CA bundle or the system's roots and can present a client
//! certificate), `pem` (reading the files) and `bearer` (the bearer token, the other way to
//! authorize a mutating request). rustls with the ring provider throughout.

pub mod bearer;
pub mod client;
pub mod peer;
pub mod pem;
pub mod server;
