//! The shared contract of the WAL archive on a store: a segment archived (gzip, barman-cloud's
//! key), archived again (identical → already archived, different → conflict), restored
//! byte-identical; a `.partial` restored for its segment, a missing one not found, a history
//! file, and the listing. Run against both backends by `store_contract.rs`'s macro.

use std::time::Duration;

use bytes::Bytes;
use pgsteward_archive::layout::Compression;
use pgsteward_archive::wal::deadline_in;
use pgsteward_archive::{ArchiveOutcome, Layout, RestoreOutcome, WalArchive, WalError, WalFile};
use pgsteward_testkit::fsutil::pseudo_random;

use super::Backend;

pub(super) async fn wal_archive_and_restore(backend: Backend) {
    let store = backend.open("backups").await;
    let wal = WalArchive::new(store.clone(), Layout::new("pg-main"), Compression::Gzip, 6);
    let deadline = deadline_in(Duration::from_secs(30));
    let scratch = tempfile::tempdir().unwrap();

    let segment = WalFile::parse("000000010000000A000000FF").unwrap();
    let content = Bytes::from([pseudo_random(1 << 20, 7), vec![0u8; 15 << 20]].concat());
    let stored = wal
        .archive(&segment, content.clone(), deadline)
        .await
        .unwrap();
    let ArchiveOutcome::Stored {
        key,
        raw_bytes,
        stored_bytes,
    } = stored
    else {
        panic!("{stored:?}")
    };
    assert_eq!(
        key,
        "pg-main/wals/000000010000000A/000000010000000A000000FF.gz"
    );
    assert_eq!(raw_bytes, 16 << 20);
    assert!(stored_bytes < 2 << 20, "{stored_bytes}");
    assert!(backend
        .object_file("backups/pg-main/wals/000000010000000A/000000010000000A000000FF.gz")
        .is_file());
    assert_eq!(store.head(&key).await.unwrap().unwrap().size, stored_bytes);

    let again = wal
        .archive(&segment, content.clone(), deadline)
        .await
        .unwrap();
    assert_eq!(again, ArchiveOutcome::AlreadyArchived { key: key.clone() });
    let mut different = content.to_vec();
    different[12345] ^= 1;
    let conflict = wal
        .archive(&segment, Bytes::from(different), deadline)
        .await
        .unwrap_err();
    assert!(matches!(conflict, WalError::Conflict { .. }), "{conflict}");

    let dest = scratch.path().join("RECOVERYXLOG");
    let restored = wal.restore_to(&segment, &dest, deadline).await.unwrap();
    assert_eq!(
        restored,
        RestoreOutcome::Restored {
            key,
            bytes: 16 << 20,
            from_partial: false
        }
    );
    assert!(
        std::fs::read(&dest).unwrap() == content,
        "restored segment differs"
    );

    // A segment that only exists as .partial restores from it.
    let partial = WalFile::parse("000000020000000A00000003.partial").unwrap();
    wal.archive(&partial, Bytes::from_static(b"partial content"), deadline)
        .await
        .unwrap();
    let from_partial = WalFile::parse("000000020000000A00000003").unwrap();
    let dest = scratch.path().join("partial");
    let outcome = wal
        .restore_to(&from_partial, &dest, deadline)
        .await
        .unwrap();
    assert!(
        matches!(
            outcome,
            RestoreOutcome::Restored {
                from_partial: true,
                ..
            }
        ),
        "{outcome:?}"
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"partial content");

    let missing = WalFile::parse("000000020000000A00000004").unwrap();
    let dest = scratch.path().join("missing");
    assert_eq!(
        wal.restore_to(&missing, &dest, deadline).await.unwrap(),
        RestoreOutcome::NotFound
    );
    assert!(!dest.exists());

    let history = WalFile::parse("00000002.history").unwrap();
    wal.archive(
        &history,
        Bytes::from_static(b"1\t0/A000000\tno recovery target specified\n"),
        deadline,
    )
    .await
    .unwrap();
    let listed: Vec<String> = wal
        .list(deadline)
        .await
        .unwrap()
        .into_iter()
        .map(|(f, _)| f.name().to_owned())
        .collect();
    assert_eq!(
        listed,
        [
            "000000010000000A000000FF",
            "00000002.history",
            "000000020000000A00000003.partial"
        ]
    );
}
