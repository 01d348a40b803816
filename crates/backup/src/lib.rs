//! pgsteward-backup: base backups to an object store in barman-cloud's catalog format
//! (`<server>/base/<backup id>/backup.info` + `data.tar.gz`), restore and point-in-time
//! recovery, and retention (issue 4).
//!
//! - [`info`]: the `backup.info` file, exactly the keys barman knows.
//! - [`catalog`]: where a server's backups live in the store, listing and reading them.
//! - [`retention`]: retention policies and deleting backups and WAL as barman-cloud does.

pub mod catalog;
pub mod info;
pub mod pyliteral;
pub mod retention;
