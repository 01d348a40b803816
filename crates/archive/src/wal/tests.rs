//! Tests of `wal`: archiving (idempotent, conflicts refused, segment checks, only when
//! allowed), `archived_among`, restore with the `.partial` fallback and not-found, backup
//! history files, corrupt objects.

use super::*;
use crate::store::file::FileStore;

fn archive(root: &Path) -> WalArchive {
    let store = Arc::new(FileStore::new(root.to_path_buf()).unwrap());
    WalArchive::new(store, Layout::new("srv"), Compression::Gzip, 6)
}

#[tokio::test]
async fn a_checked_archive_refuses_what_is_not_the_named_segment() {
    let dir = tempfile::tempdir().unwrap();
    let wal = archive(&dir.path().join("store")).checking_segments(Some(42));
    let file = WalFile::parse("000000010000000000000003").unwrap();
    let deadline = deadline_in(Duration::from_secs(10));
    let mut segment = vec![0u8; 1 << 20];
    let header = crate::walheader::synthetic_header(3 << 20, 42, 1 << 20);
    segment[..header.len()].copy_from_slice(&header);

    let truncated = Bytes::copy_from_slice(&segment[..8192]);
    let err = wal.archive(&file, truncated, deadline).await.unwrap_err();
    assert!(
        matches!(&err, WalError::InvalidSegment { name, .. } if name == file.name()),
        "{err}"
    );
    assert!(err.to_string().contains("8192 bytes"), "{err}");
    assert!(wal.list(deadline).await.unwrap().is_empty());

    let stored = wal
        .archive(&file, Bytes::from(segment.clone()), deadline)
        .await;
    assert!(
        matches!(stored, Ok(ArchiveOutcome::Stored { .. })),
        "{stored:?}"
    );
    // Against the stored segment too: a wrong file is refused before any comparison.
    let foreign = wal.checking_segments(Some(43));
    let err = foreign
        .archive(&file, Bytes::from(segment), deadline)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("database system 42"), "{err}");
}

#[tokio::test]
async fn archived_among_tells_segments_from_partials_and_history() {
    let dir = tempfile::tempdir().unwrap();
    let wal = archive(&dir.path().join("store"));
    let deadline = deadline_in(Duration::from_secs(10));
    let names = [
        "000000010000000000000004",
        "000000010000000000000005.partial",
        "00000002.history",
        "000000020000000100000000",
    ];
    for name in names {
        let file = WalFile::parse(name).unwrap();
        wal.archive(&file, Bytes::from_static(b"wal"), deadline)
            .await
            .unwrap();
    }
    let asked: Vec<WalFile> = [
        "000000010000000000000004",
        "000000010000000000000005",
        "000000010000000000000006",
        "000000020000000100000000",
    ]
    .iter()
    .map(|n| WalFile::parse(n).unwrap())
    .collect();
    let mut found: Vec<String> = wal
        .archived_among(&asked, deadline)
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.name().to_owned())
        .collect();
    found.sort();
    assert_eq!(
        found,
        ["000000010000000000000004", "000000020000000100000000"]
    );
    // One HEAD of the key this archive writes: the segment, and not its partial's name.
    for (name, archived) in [
        ("000000010000000000000004", true),
        ("000000010000000000000005", false),
        ("000000010000000000000005.partial", true),
        ("00000002.history", true),
        ("00000003.history", false),
    ] {
        let file = WalFile::parse(name).unwrap();
        assert_eq!(
            wal.is_archived(&file, deadline).await.unwrap(),
            archived,
            "{name}"
        );
    }
}

#[tokio::test]
async fn archive_is_idempotent_and_refuses_conflicts() {
    let dir = tempfile::tempdir().unwrap();
    let wal = archive(&dir.path().join("store"));
    let file = WalFile::parse("000000010000000000000001").unwrap();
    let content = Bytes::from(vec![7u8; 1 << 20]);
    let deadline = deadline_in(Duration::from_secs(10));
    let first = wal.archive(&file, content.clone(), deadline).await.unwrap();
    assert!(matches!(first, ArchiveOutcome::Stored { stored_bytes, .. } if stored_bytes < 100_000));
    assert!(dir
        .path()
        .join("store/srv/wals/0000000100000000/000000010000000000000001.gz")
        .is_file());
    let again = wal.archive(&file, content.clone(), deadline).await.unwrap();
    assert!(matches!(again, ArchiveOutcome::AlreadyArchived { .. }));
    let other = Bytes::from(vec![8u8; 1 << 20]);
    let conflict = wal.archive(&file, other, deadline).await.unwrap_err();
    assert!(matches!(conflict, WalError::Conflict { .. }), "{conflict}");
    // The stored object is untouched.
    let restored = dir.path().join("restored");
    let outcome = wal.restore_to(&file, &restored, deadline).await.unwrap();
    assert!(matches!(
        outcome,
        RestoreOutcome::Restored {
            from_partial: false,
            ..
        }
    ));
    assert_eq!(std::fs::read(&restored).unwrap(), content);
}

#[tokio::test]
async fn archive_file_stores_nothing_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let wal = archive(&dir.path().join("store"));
    let file = WalFile::parse("000000010000000000000002").unwrap();
    let path = dir.path().join("segment");
    std::fs::write(&path, vec![3u8; 1 << 20]).unwrap();
    let deadline = deadline_in(Duration::from_secs(10));
    let stored = dir
        .path()
        .join("store/srv/wals/0000000100000000/000000010000000000000002.gz");
    let refused = wal
        .archive_file(&file, &path, deadline, async {
            Err("destination refused".to_owned())
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&refused, WalError::NotAllowed(m) if m == "destination refused"),
        "{refused}"
    );
    assert!(!stored.exists());
    let outcome = wal
        .archive_file(&file, &path, deadline, async { Ok(()) })
        .await
        .unwrap();
    assert!(
        matches!(outcome, ArchiveOutcome::Stored { .. }),
        "{outcome:?}"
    );
    assert!(stored.is_file());
}

#[tokio::test]
async fn restore_falls_back_to_partial_and_reports_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let wal = archive(&dir.path().join("store"));
    let deadline = deadline_in(Duration::from_secs(10));
    let partial = WalFile::parse("000000020000000000000003.partial").unwrap();
    wal.archive(&partial, Bytes::from_static(b"partial content"), deadline)
        .await
        .unwrap();
    let segment = WalFile::parse("000000020000000000000003").unwrap();
    let dest = dir.path().join("seg");
    let outcome = wal.restore_to(&segment, &dest, deadline).await.unwrap();
    assert!(matches!(
        outcome,
        RestoreOutcome::Restored {
            from_partial: true,
            ..
        }
    ));
    assert_eq!(std::fs::read(&dest).unwrap(), b"partial content");
    let missing = WalFile::parse("000000020000000000000004").unwrap();
    assert_eq!(
        wal.restore_to(&missing, &dir.path().join("x"), deadline)
            .await
            .unwrap(),
        RestoreOutcome::NotFound
    );
    assert!(!dir.path().join("x").exists());
    let history = WalFile::parse("00000002.history").unwrap();
    wal.archive(
        &history,
        Bytes::from_static(b"1\t0/3000000\tno recovery target specified\n"),
        deadline,
    )
    .await
    .unwrap();
    assert!(dir
        .path()
        .join("store/srv/wals/00000002.history.gz")
        .is_file());
    let listed: Vec<String> = wal
        .list(deadline)
        .await
        .unwrap()
        .into_iter()
        .map(|(f, _)| f.name().to_owned())
        .collect();
    assert_eq!(
        listed,
        ["00000002.history", "000000020000000000000003.partial"]
    );
}

#[tokio::test]
async fn backup_history_files_do_not_shadow_their_segment() {
    let dir = tempfile::tempdir().unwrap();
    let wal = archive(&dir.path().join("store"));
    let deadline = deadline_in(Duration::from_secs(10));
    let backup = WalFile::parse("000000010000000000000004.00000028.backup").unwrap();
    wal.archive(&backup, Bytes::from_static(b"START WAL LOCATION"), deadline)
        .await
        .unwrap();
    let segment = WalFile::parse("000000010000000000000004").unwrap();
    let dest = dir.path().join("seg");
    assert_eq!(
        wal.restore_to(&segment, &dest, deadline).await.unwrap(),
        RestoreOutcome::NotFound
    );
    wal.archive(&segment, Bytes::from_static(b"segment"), deadline)
        .await
        .unwrap();
    assert!(matches!(
        wal.restore_to(&segment, &dest, deadline).await.unwrap(),
        RestoreOutcome::Restored {
            from_partial: false,
            ..
        }
    ));
    assert_eq!(std::fs::read(&dest).unwrap(), b"segment");
}

#[tokio::test]
async fn corrupt_objects_are_reported() {
    let dir = tempfile::tempdir().unwrap();
    let wal = archive(&dir.path().join("store"));
    let path = dir
        .path()
        .join("store/srv/wals/0000000100000000/000000010000000000000009.gz");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, b"not gzip at all").unwrap();
    let file = WalFile::parse("000000010000000000000009").unwrap();
    let err = wal
        .restore_to(
            &file,
            &dir.path().join("out"),
            deadline_in(Duration::from_secs(5)),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, WalError::Corrupt { .. }), "{err}");
    assert!(!dir.path().join("out").exists());
}
