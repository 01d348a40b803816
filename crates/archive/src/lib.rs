//! pgsteward-archive: object storage (S3 through aws-sdk-s3, and `file://` as the embedded
//! default), the barman-cloud object layout, WAL segment names, gzip compression (with a pool
//! of reusable segment buffers), and WAL archive/restore with the no-overwrite rule and the
//! segment header check, and timeline history files. No knowledge of HTTP or of the supervisor.

pub mod atomic_file;
pub mod buffers;
pub mod compress;
pub mod layout;
pub mod lsn;
pub mod retry;
pub mod store;
pub mod timeline;
pub mod wal;
pub mod walheader;
pub mod walname;

pub use layout::Layout;
pub use store::{open, ObjectMeta, ObjectStore, PutNew, StoreError, StoreOptions};
pub use wal::{ArchiveOutcome, RestoreOutcome, WalArchive, WalError};
pub use walname::{WalFile, WalKind};
