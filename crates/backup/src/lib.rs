//! pgsteward-backup: base backups to an object store in barman-cloud's catalog format
//! (`<server>/base/<backup id>/backup.info` + `data.tar.gz`), restore and point-in-time
//! recovery, and retention (issue 4).
//!
//! - [`info`]: the `backup.info` file, exactly the keys barman knows.
//! - [`catalog`]: where a server's backups live in the store, listing and reading them.
//! - [`restore`]: choosing a backup for a target, restoring it into an empty directory, and
//!   the recovery parameters of a target.

pub mod catalog;
pub mod info;
pub mod pyliteral;
pub mod restore;
