//! Retention of base backups and WAL with barman-cloud-backup-delete's exact semantics.
//!
//! - [`policy`]: the policy text (`30d`, `RECOVERY WINDOW OF 4 WEEKS`, `REDUNDANCY 3`).
//! - [`report`]: each backup's retention status (VALID, OBSOLETE, KEEP:FULL, ...).
//! - [`plan`]: the pure decision of which objects go, in barman's order.
//! - [`apply`]: reading the catalog from the store and carrying a plan out (or a dry run).
//! - [`xlog`]: WAL object names as barman reads them.

pub mod apply;
pub mod plan;
pub mod policy;
pub mod report;
pub mod xlog;

pub use apply::{
    delete_backup, execute, keep_annotations, load_snapshot, run_retention, ApplyOptions,
    RetentionError, Summary,
};
pub use plan::{plan_delete, plan_retention, BackupDeletion, CatalogSnapshot, Plan, PlanError};
pub use policy::{PolicyError, RetentionPolicy, WindowUnit};
pub use report::{keep_target, report, BackupSummary, KeepTarget, ReportError, RetentionStatus};

#[cfg(test)]
mod tests;
