//! Bootstrap of an empty data directory, restart on existing data, JSON logs and clean
//! shutdown, and a bootstrap with archiving configured (no failed archive_command, WAL
//! archived from the first segment), against real PostgreSQL 15 and 18.

mod common;

use common::*;
use nix::sys::signal::Signal;
use pgsteward_testkit::{sql, sql_value};

async fn bootstrap_then_restart_on_existing_data(version: PgVersion) {
    let instance = Instance::new(options(version));
    let owner_pw = instance.dir.write("owner.pw", "app-owner-pw\n");
    let init_sql = instance.dir.write(
        "init.sql",
        "CREATE TABLE init_marker (id int PRIMARY KEY, note text);\nINSERT INTO init_marker VALUES (1, 'post-init ran');\n",
    );
    let args: Vec<String> = [
        "--set=bootstrap.initdb.database=app".to_owned(),
        "--set=bootstrap.initdb.owner=app".to_owned(),
        "--set=bootstrap.initdb.locale=C".to_owned(),
        format!(
            "--set=bootstrap.initdb.owner_password_file={}",
            owner_pw.display()
        ),
        format!(
            "--set=bootstrap.initdb.post_init_sql_files=[{}]",
            init_sql.display()
        ),
    ]
    .into();
    let mut manager = instance.spawn_with(&args);
    manager.wait_ready(READY).await;

    let status = manager.status().await;
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["role"], "primary");
    assert_eq!(status["postgres_major"], version.major());
    assert!(
        status["postgres_version"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!("{}.", version.major())),
        "{status}"
    );
    assert_eq!(status["timeline"], 1);
    assert!(status["current_lsn"]
        .as_str()
        .is_some_and(|l| l.contains('/')));
    assert!(status["config_hash"]
        .as_str()
        .is_some_and(|h| h.len() == 64));
    let system_id = status["system_identifier"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(system_id.parse::<u64>().is_ok(), "{status}");

    // Superuser password, owner password, application database, post-init SQL, settings.
    assert_eq!(
        sql_value(instance.pg_port, PASSWORD, "SHOW data_checksums")
            .await
            .ok()
            .as_deref(),
        Some("on")
    );
    assert_eq!(
        sql_value(instance.pg_port, PASSWORD, "SHOW server_encoding")
            .await
            .ok()
            .as_deref(),
        Some("UTF8")
    );
    assert_eq!(
        sql_value(
            instance.pg_port,
            PASSWORD,
            "SELECT datcollate FROM pg_database WHERE datname = 'app'"
        )
        .await
        .ok()
        .as_deref(),
        Some("C")
    );
    assert_eq!(
        sql_value(
            instance.pg_port,
            PASSWORD,
            "SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'app'"
        )
        .await
        .ok()
        .as_deref(),
        Some("t")
    );
    let rows = sql(instance.pg_port, "app", "app-owner-pw", "app", "SELECT current_user, (SELECT datdba::regrole::text FROM pg_database WHERE datname = current_database())")
        .await
        .unwrap_or_else(|e| panic!("owner login into app: {e:?}"));
    assert_eq!(rows, vec![vec![Some("app".into()), Some("app".into())]]);
    // Post-init SQL runs as the superuser in the application database.
    let rows = sql(
        instance.pg_port,
        "postgres",
        PASSWORD,
        "app",
        "SELECT note FROM init_marker",
    )
    .await
    .unwrap_or_default();
    assert_eq!(rows, vec![vec![Some("post-init ran".into())]]);
    assert!(
        sql(instance.pg_port, "app", "wrong", "app", "SELECT 1")
            .await
            .is_err(),
        "wrong password accepted"
    );

    // Managed files.
    let conf = std::fs::read_to_string(instance.pgdata.join("postgresql.conf")).unwrap_or_default();
    assert!(conf.trim_end().ends_with("include 'pgsteward.conf'"));
    let include =
        std::fs::read_to_string(instance.pgdata.join("pgsteward.conf")).unwrap_or_default();
    assert!(
        include
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("# sha256: ")),
        "{include}"
    );
    assert!(!instance
        .pgdata
        .join("pgsteward.bootstrap-incomplete")
        .exists());

    // Postgres's own records come out as JSON on stdout beside the manager's.
    wait_for("a postgres jsonlog record on stdout", READY, || async {
        manager
            .log()
            .lines()
            .any(|l| l.contains("\"target\":\"postgres\"") && l.contains("\"record\":"))
            .then_some(())
    })
    .await;
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0, "{}", manager.log());
    assert_eq!(cluster_state(version, &instance.pgdata), "shut down");
    let log = manager.log();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let parsed: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(
            parsed.get("timestamp").is_some() && parsed.get("level").is_some(),
            "{line}"
        );
    }
    assert!(
        log.contains("\"target\":\"pgsteward::"),
        "manager records missing"
    );
    assert!(
        !log.contains(PASSWORD) && !log.contains("app-owner-pw") && !log.contains(TOKEN),
        "a secret reached the log"
    );

    // Second start: same system, no initdb, data kept.
    let mut again = instance.spawn_with(&args);
    again.wait_ready(READY).await;
    assert_eq!(
        again.status().await["system_identifier"].as_str(),
        Some(system_id.as_str())
    );
    assert!(
        !again.log().contains("initdb"),
        "initdb ran on existing data"
    );
    let rows = sql(
        instance.pg_port,
        "postgres",
        PASSWORD,
        "app",
        "SELECT count(*) FROM init_marker",
    )
    .await
    .unwrap_or_default();
    assert_eq!(rows, vec![vec![Some("1".into())]]);
    again.signal(Signal::SIGINT).await;
    assert_eq!(again.wait_exit(EXIT).await, 0, "{}", again.log());
    assert_eq!(cluster_state(version, &instance.pgdata), "shut down");
}
for_each_version!(bootstrap_then_restart_on_existing_data);

/// A bootstrap that runs postgres before the manager (application database) with archiving
/// configured: that postgres keeps its WAL for later instead of calling an archive_command
/// whose settings do not exist yet, and every segment from the first is archived once the
/// instance runs.
async fn bootstrap_with_archiving_defers_the_first_segments(version: PgVersion) {
    let scratch = pgsteward_testkit::fsutil::ScratchDir::new();
    let store = scratch.mkdir("store", 0o700);
    let mut opts = options(version);
    opts.args = vec![
        format!("--set=archive.destination=file://{}", store.display()),
        "--set=archive.server_name=bootstrap".into(),
        "--set=bootstrap.initdb.database=app".into(),
        "--set=bootstrap.initdb.owner=app".into(),
    ];
    let instance = Instance::new(opts);
    let mut manager = instance.spawn();
    manager.wait_ready(READY).await;
    let switched = sql_value(
        instance.pg_port,
        PASSWORD,
        "SELECT pg_walfile_name(pg_switch_wal())",
    )
    .await
    .unwrap_or_else(|e| panic!("switching WAL: {e}"));
    let first = "000000010000000000000001";
    wait_for("the switched segment in the archive", READY, || async {
        let status = http::get(&format!("{}/pg/status", instance.api()))
            .await?
            .json();
        let last = status["archive"]["last_archived_wal"].as_str()?.to_owned();
        (last >= switched).then_some(())
    })
    .await;
    let pgdata = instance.pgdata.display().to_string();
    let check = pgsteward(&["wal", "check", "--pgdata", &pgdata]);
    let report = String::from_utf8_lossy(&check.stdout).into_owned();
    assert_eq!(check.status.code(), Some(0), "{report}");
    let first_object = store.join(format!("bootstrap/wals/{}/{first}.gz", &first[..16]));
    assert!(first_object.is_file(), "{first} is not archived: {report}");
    let log = manager.log();
    for failure in ["archive command failed", "pgsteward.archive.json"] {
        assert!(
            !log.lines().any(|l| l.contains(failure)),
            "the bootstrap logged {failure:?}:\n{log}"
        );
    }
    manager.signal(Signal::SIGTERM).await;
    assert_eq!(manager.wait_exit(EXIT).await, 0, "{}", manager.log());
}
for_each_version!(bootstrap_with_archiving_defers_the_first_segments);
