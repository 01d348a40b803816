//! The backup's own postgres session: facts barman records in backup.info, then
//! `pg_backup_start(label, fast)` and `pg_backup_stop(wait_for_archive => true)` on the same
//! connection (the PG 15+ non-exclusive API; closing the session aborts the backup).

use tokio_postgres::{Client, NoTls};

use super::TakeError;

/// What postgres says before the backup starts.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    pub version_num: u32,
    pub systemid: String,
    pub in_recovery: bool,
    pub data_checksums: bool,
    pub segment_size: u64,
    pub config_file: String,
    pub hba_file: String,
    pub ident_file: String,
    pub data_directory: String,
}

/// Where the backup started.
#[derive(Debug, Clone)]
pub struct Started {
    pub lsn: String,
    pub timeline: u32,
    pub time: chrono::DateTime<chrono::FixedOffset>,
}

/// Where it stopped.
#[derive(Debug, Clone)]
pub struct Stopped {
    pub lsn: String,
    pub label: String,
    pub tablespace_map: String,
    pub time: chrono::DateTime<chrono::FixedOffset>,
}

fn pg(what: &str) -> impl Fn(tokio_postgres::Error) -> TakeError + '_ {
    move |e| {
        let detail = e
            .as_db_error()
            .map(|db| db.message().to_owned())
            .unwrap_or_else(|| e.to_string());
        TakeError::Postgres(format!("{what}: {detail}"))
    }
}

/// Open the backup's session.
pub async fn connect(config: &tokio_postgres::Config) -> Result<Client, TakeError> {
    let (client, connection) = config.connect(NoTls).await.map_err(pg("connecting"))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "backup session closed");
        }
    });
    Ok(client)
}

pub async fn facts(client: &Client) -> Result<ServerFacts, TakeError> {
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, \
                    (SELECT system_identifier::text FROM pg_control_system()), \
                    pg_is_in_recovery(), \
                    current_setting('data_checksums') = 'on', \
                    (SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'), \
                    current_setting('config_file'), current_setting('hba_file'), \
                    current_setting('ident_file'), current_setting('data_directory')",
            &[],
        )
        .await
        .map_err(pg("reading server facts"))?;
    let version: i32 = row.get(0);
    let segment: i64 = row.get(4);
    Ok(ServerFacts {
        version_num: u32::try_from(version).unwrap_or(0),
        systemid: row.get(1),
        in_recovery: row.get(2),
        data_checksums: row.get(3),
        segment_size: u64::try_from(segment).unwrap_or(crate::info::DEFAULT_SEGMENT_SIZE),
        config_file: row.get(5),
        hba_file: row.get(6),
        ident_file: row.get(7),
        data_directory: row.get(8),
    })
}

pub async fn start(client: &Client, label: &str, fast: bool) -> Result<Started, TakeError> {
    if fast {
        tracing::info!("backup starts with an immediate checkpoint");
    }
    let row = client
        .query_one(
            "SELECT pg_backup_start($1, $2)::text, \
                    (SELECT timeline_id FROM pg_control_checkpoint()), (extract(epoch FROM now()) * 1000000)::int8",
            &[&label, &fast],
        )
        .await
        .map_err(pg("pg_backup_start"))?;
    let timeline: i32 = row.get(1);
    let time = micros_to_time(row.get(2));
    Ok(Started {
        lsn: row.get(0),
        timeline: u32::try_from(timeline).unwrap_or(1),
        time,
    })
}

pub async fn stop(client: &Client) -> Result<Stopped, TakeError> {
    let row = client
        .query_one(
            "SELECT lsn::text, labelfile, spcmapfile, (extract(epoch FROM now()) * 1000000)::int8 FROM pg_backup_stop(wait_for_archive => true)",
            &[],
        )
        .await
        .map_err(pg("pg_backup_stop"))?;
    let time = micros_to_time(row.get(3));
    Ok(Stopped {
        lsn: row.get(0),
        label: row.get(1),
        tablespace_map: row.get::<_, Option<String>>(2).unwrap_or_default(),
        time,
    })
}

/// Tablespace names by oid.
pub async fn tablespace_names(client: &Client) -> Result<Vec<(u64, String)>, TakeError> {
    let rows = client
        .query("SELECT oid::bigint, spcname::text FROM pg_tablespace", &[])
        .await
        .map_err(pg("listing tablespaces"))?;
    Ok(rows
        .iter()
        .map(|r| (u64::try_from(r.get::<_, i64>(0)).unwrap_or(0), r.get(1)))
        .collect())
}

fn micros_to_time(micros: i64) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::from_timestamp_micros(micros)
        .unwrap_or_default()
        .fixed_offset()
}

/// An LSN postgres returned (`X/Y`); an error naming `what` when it is not one, so that no
/// made-up position reaches the backup's record.
pub fn returned_lsn(what: &str, text: &str) -> Result<u64, TakeError> {
    pgsteward_archive::lsn::parse_lsn(text)
        .ok_or_else(|| TakeError::Postgres(format!("{what} returned {text:?}, not an LSN")))
}

/// The WAL segment holding `lsn`; with `previous`, the one holding the byte before it (as
/// `pg_walfile_name` names a backup's end).
pub fn wal_name(
    timeline: u32,
    lsn: u64,
    segment_size: u64,
    previous: bool,
) -> Result<String, TakeError> {
    let segment_size = segment_size.max(1);
    let segno = if previous && lsn > 0 {
        (lsn - 1) / segment_size
    } else {
        lsn / segment_size
    };
    pgsteward_archive::WalFile::segment(timeline, segno, segment_size)
        .map(|file| file.name().to_owned())
        .ok_or_else(|| {
            TakeError::Postgres(format!(
                "no WAL segment name for timeline {timeline} at {} (segment size {segment_size})",
                pgsteward_archive::lsn::format_lsn(lsn)
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wal_names_and_lsns() {
        assert_eq!(returned_lsn("x", "0/4000028").ok(), Some(0x4000028));
        assert_eq!(returned_lsn("x", "1/0").ok(), Some(1 << 32));
        let error = returned_lsn("pg_backup_start", "")
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            error.as_deref(),
            Some("postgres: pg_backup_start returned \"\", not an LSN")
        );
        let seg = 16 * 1024 * 1024;
        assert_eq!(
            wal_name(1, 0x4000028, seg, false).ok().as_deref(),
            Some("000000010000000000000004")
        );
        assert_eq!(
            wal_name(1, 0x5000000, seg, true).ok().as_deref(),
            Some("000000010000000000000004")
        );
        assert_eq!(
            wal_name(2, (1 << 32) + 0x3000000, seg, false)
                .ok()
                .as_deref(),
            Some("000000020000000100000003")
        );
        // 1 GiB segments: four per log file.
        assert_eq!(
            wal_name(1, (1 << 32) + (3 << 30) + 5, 1 << 30, false)
                .ok()
                .as_deref(),
            Some("000000010000000100000003")
        );
        // Timeline 0 does not exist: an error, not a made-up name.
        assert!(wal_name(0, 0x4000028, seg, false).is_err());
    }
}
