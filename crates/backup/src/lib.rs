//! pgsteward-backup: base backups to an object store in barman-cloud's catalog format
//! (`<server>/base/<backup id>/backup.info` + `data.tar.gz`), restore and point-in-time
//! recovery, and retention (issue 4).
//!
//! - [`info`]: the `backup.info` file, exactly the keys barman knows.
//! - [`catalog`]: where a server's backups live in the store, listing and reading them.
//! - [`take`]: taking a backup (scan, stream, upload, catalog); [`manifest`]: its checksums;
//!   [`verify`]: checking a stored backup against its manifest.
//! - [`tar`], [`gzip`]: the PAX tar writer and the parallel single-member gzip of backups.
//! - [`retention`]: retention policies and deleting backups and WAL as barman-cloud does.
//! - [`restore`]: choosing a backup for a target, restoring it into an empty directory, and
//!   the recovery parameters of a target.

pub mod catalog;
pub mod gzip;
pub mod info;
pub mod manifest;
pub mod pyliteral;
pub mod restore;
pub mod retention;
pub mod take;
pub mod tar;
pub mod verify;
