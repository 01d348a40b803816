//! Replication between two real managers on loopback (PG15 and PG18): a replica bootstraps
//! from a primary with pg_basebackup, streams and catches up, keeps its role across a
//! manager restart; status and metrics show both sides; promotion checks role and term,
//! is idempotent for a retry, and the promoted instance writes on timeline 2; a clone from
//! an unreachable primary (or with a wrong password) fails with a clear error, exit 1 and an
//! empty data directory.
//! `POST /pg/slots/drop` keeps a slot in use, refuses another term, a bad name or no token,
//! and drops the slot once its standby is gone.
//! With an archive configured, a standby whose slot is gone replays from the archive
//! (restore_command through `wal-restore`) and streams again once the slot is back; a
//! re-clone after an interrupted clone starts over and reuses the slot of its name; the
//! promoted standby archives its timeline history. Fencing is in `fence.rs`.

mod common;

use std::time::Duration;

use common::*;
use nix::sys::signal::Signal;
use serde_json::Value;

/// Bound for rows or status to reach the replica.
const CATCH_UP: Duration = Duration::from_secs(60);

/// A replica of `primary` (not started): clones with pg_basebackup as the superuser.
fn replica_of(version: PgVersion, primary_port: u16) -> Instance {
    let mut replica = Instance::new(options(version));
    let password_file = replica.dir.join("superuser.pw");
    replica.options.args = vec![
        "--set=bootstrap.method=basebackup".into(),
        "--set=bootstrap.basebackup.host=127.0.0.1".into(),
        format!("--set=bootstrap.basebackup.port={primary_port}"),
        format!(
            "--set=bootstrap.basebackup.password_file={}",
            password_file.display()
        ),
    ];
    replica
}

async fn status(instance: &Instance) -> Option<Value> {
    Some(
        http::get(&format!("{}/pg/status", instance.api()))
            .await?
            .json(),
    )
}

async fn count_rows(instance: &Instance) -> Option<i64> {
    pgsteward_testkit::sql_value(instance.pg_port, PASSWORD, "SELECT count(*) FROM t")
        .await
        .ok()?
        .parse()
        .ok()
}

async fn wait_streaming(instance: &Instance) -> Value {
    wait_for("the replica to stream", CATCH_UP, || async {
        let status = status(instance).await?;
        (status["replication"]["receiver"]["wal_receiver_status"] == "streaming").then_some(status)
    })
    .await
}

/// HTTP status of a load-balancer check.
async fn lb_status(instance: &Instance, path: &str) -> u16 {
    http::get(&format!("{}{path}", instance.api()))
        .await
        .map_or(0, |r| r.status)
}

/// `pgsteward status --url` of `instance` (plain text).
fn status_text(instance: &Instance) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_pgsteward"))
        .args(["status", "--url", &instance.api()])
        .output()
        .unwrap_or_else(|e| panic!("pgsteward status: {e}"));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// `field=value` of the first JSON log record of `path` whose message contains `message`.
fn log_field(path: &std::path::Path, message: &str, field: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter(|l| l.contains(message))
        .find_map(|l| {
            let record: Value = serde_json::from_str(l).ok()?;
            let value = record.get(field).or_else(|| record["fields"].get(field))?;
            Some(format!("{field}={value}"))
        })
        .unwrap_or_else(|| format!("{field}=?"))
}

async fn replica_streams_and_promotes(version: PgVersion) {
    let primary = Instance::new(options(version));
    let primary_manager = primary.spawn();
    primary_manager.wait_ready(READY).await;
    exec(&primary, "CREATE TABLE t (id int PRIMARY KEY, tli int)").await;
    exec(&primary, "INSERT INTO t VALUES (1, 1)").await;
    let primary_status = status(&primary).await.unwrap_or_default();
    assert_eq!(primary_status["replication"]["role"], "primary");
    assert_eq!(primary_status["replication"]["term"], 1);

    let replica = replica_of(version, primary.pg_port);
    let replica_name = format!("test-{}", replica.pg_port);
    let slot = format!("test_{}", replica.pg_port);
    let mut replica_manager = replica.spawn();
    replica_manager.wait_ready(READY).await;
    let log = replica_manager.log();
    assert!(
        log.contains("pg_basebackup progress"),
        "no progress in the log:\n{log}"
    );
    assert!(log.contains("clone complete"), "{log}");
    assert!(
        log.contains(r#""output":"pg_basebackup: base backup completed""#),
        "{log}"
    );
    assert!(!replica.pgdata.join(".pgsteward-clone").exists());
    assert!(replica.pgdata.join("standby.signal").exists());

    // Rows written on the primary reach the replica.
    exec(
        &primary,
        "INSERT INTO t SELECT g, 1 FROM generate_series(2, 500) g",
    )
    .await;
    wait_for("500 rows on the replica", CATCH_UP, || async {
        (count_rows(&replica).await? == 500).then_some(())
    })
    .await;

    // Status on both sides.
    let replica_status = wait_streaming(&replica).await;
    assert_eq!(replica_status["role"], "replica", "{replica_status}");
    let replication = &replica_status["replication"];
    assert_eq!(replication["role"], "replica", "{replica_status}");
    assert_eq!(replication["term"], 1, "{replica_status}");
    assert_eq!(
        replication["upstream"],
        format!("127.0.0.1:{}", primary.pg_port)
    );
    assert_eq!(replication["slot_name"], slot.as_str());
    let receiver = &replication["receiver"];
    assert!(receiver["received_lsn"].is_string(), "{replica_status}");
    assert!(receiver["replayed_lsn"].is_string(), "{replica_status}");
    assert_eq!(receiver["received_timeline"], 1);
    assert!(receiver["replay_lag_bytes"].is_u64(), "{replica_status}");
    assert!(receiver["replay_lag_seconds"].is_f64(), "{replica_status}");
    let primary_status = wait_for("the standby in pg_stat_replication", CATCH_UP, || async {
        let status = status(&primary).await?;
        let standbys = status["replication"]["standbys"].as_array()?.clone();
        standbys
            .iter()
            .any(|s| s["application_name"] == replica_name.as_str() && s["state"] == "streaming")
            .then_some(status)
    })
    .await;
    let replication = &primary_status["replication"];
    assert!(replication["receiver"].is_null(), "{primary_status}");
    assert_eq!(replication["synchronous_standby_names"], "");
    let slots = replication["slots"].as_array().cloned().unwrap_or_default();
    assert!(
        slots
            .iter()
            .any(|s| s["slot_name"] == slot.as_str() && s["active"] == true),
        "the replica's slot is not active on the primary: {primary_status}"
    );
    let standby = replication["standbys"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|s| s["application_name"] == replica_name.as_str())
                .cloned()
        })
        .unwrap_or_default();
    assert_eq!(standby["sync_state"], "async", "{standby}");
    assert_eq!(standby["client_addr"], "127.0.0.1", "{standby}");
    assert!(standby["replay_lsn"].is_string(), "{standby}");

    // Load-balancer checks see a streaming replica and a primary.
    assert_eq!(lb_status(&replica, "/replica").await, 200);
    assert_eq!(lb_status(&replica, "/primary").await, 503);
    assert_eq!(lb_status(&primary, "/primary").await, 200);
    assert_eq!(lb_status(&primary, "/replica").await, 503);

    // `pgsteward status` shows the replication block on both sides.
    let text = status_text(&replica);
    assert!(text.contains("replication   replica, term 1"), "{text}");
    assert!(text.contains("wal receiver  streaming"), "{text}");
    let text = status_text(&primary);
    assert!(text.contains("replication   primary, term 1"), "{text}");
    assert!(
        text.contains(&format!("standby       {replica_name} streaming async")),
        "{text}"
    );
    assert!(
        text.contains(&format!("slot          {slot} active")),
        "{text}"
    );

    // Metrics.
    let metrics = replica.metrics();
    assert_eq!(
        metric(&metrics, "pgsteward_pg_replication_in_recovery").await,
        Some(1.0)
    );
    assert_eq!(
        metric(&metrics, "pgsteward_replication_term").await,
        Some(1.0)
    );
    assert!(metric(&metrics, "pgsteward_pg_replication_lag")
        .await
        .is_some());
    assert!(metric(&metrics, "pgsteward_pg_replication_lag_bytes")
        .await
        .is_some());
    assert_eq!(
        metric(
            &primary.metrics(),
            "pgsteward_pg_replication_streaming_replicas"
        )
        .await,
        Some(1.0)
    );
    assert_eq!(
        metric(&primary.metrics(), "pgsteward_pg_replication_in_recovery").await,
        Some(0.0)
    );
    let slot_active = format!("pgsteward_pg_replication_slot_active{{slot_name=\"{slot}\"}}");
    let slot_retained =
        format!("pgsteward_pg_replication_slot_retained_bytes{{slot_name=\"{slot}\"}}");
    assert_eq!(metric(&primary.metrics(), &slot_active).await, Some(1.0));
    assert!(metric(&primary.metrics(), &slot_retained)
        .await
        .is_some_and(|b| b >= 0.0));

    // A restarted replica manager stays a standby of the same primary.
    replica_manager.signal(Signal::SIGTERM).await;
    assert_eq!(replica_manager.wait_exit(EXIT).await, 0);
    let replica_manager = replica.spawn();
    replica_manager.wait_ready(READY).await;
    wait_streaming(&replica).await;
    exec(&primary, "INSERT INTO t VALUES (501, 1)").await;
    wait_for("row 501 on the replica", CATCH_UP, || async {
        (count_rows(&replica).await? == 501).then_some(())
    })
    .await;

    // A reloaded configuration reaches primary_conninfo (reloadable): streaming goes on.
    let config = std::fs::read_to_string(&replica.config_path).unwrap_or_default();
    let config = config.replacen(
        "bootstrap:\n",
        "bootstrap:\n  basebackup:\n    sslmode: disable\n",
        1,
    );
    replica.dir.write("pgsteward.yaml", &config);
    wait_for("sslmode=disable in primary_conninfo", CATCH_UP, || async {
        let conninfo = pgsteward_testkit::sql_value(
            replica.pg_port,
            PASSWORD,
            "SELECT current_setting('primary_conninfo')",
        )
        .await
        .ok()?;
        conninfo.contains("sslmode=disable").then_some(())
    })
    .await;
    exec(&primary, "INSERT INTO t VALUES (502, 1)").await;
    wait_for("row 502 on the replica", CATCH_UP, || async {
        (count_rows(&replica).await? == 502).then_some(())
    })
    .await;
    wait_streaming(&replica).await;

    // Promotion: authentication, body, role and term checks.
    let (code, _) = post(&replica, "/pg/promote", None, r#"{"term":2}"#).await;
    assert_eq!(code, 401);
    let (code, body) = post(&replica, "/pg/promote", Some(TOKEN), "").await;
    assert_eq!(code, 400, "{body}");
    let (code, body) = post(&primary, "/pg/promote", Some(TOKEN), r#"{"term":2}"#).await;
    assert_eq!(code, 409, "promote on the primary: {body}");
    assert_eq!(body["error"]["code"], "conflict");
    let (code, body) = post(&replica, "/pg/promote", Some(TOKEN), r#"{"term":1}"#).await;
    assert_eq!(code, 409, "stale term: {body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains("current term 1"), "{body}");
    assert_eq!(
        status(&replica).await.unwrap_or_default()["role"],
        "replica"
    );

    let (code, body) = post(
        &replica,
        "/pg/promote",
        Some(TOKEN),
        r#"{"term":2,"synchronous_standby_names":"ANY 1 (nobody)"}"#,
    )
    .await;
    assert_eq!(code, 400, "unquoted names: {body}");
    assert_eq!(
        status(&replica).await.unwrap_or_default()["replication"]["term"],
        1
    );
    // The coordinator's names come with the promotion: in effect from the first commit.
    let (code, body) = post(
        &replica,
        "/pg/promote",
        Some(TOKEN),
        r#"{"term":2,"synchronous_standby_names":"ANY 1 (\"nobody\")"}"#,
    )
    .await;
    assert_eq!(code, 200, "{body}\n{}", replica_manager.log());
    assert_eq!(
        query(&replica, "SHOW synchronous_standby_names").await,
        r#"ANY 1 ("nobody")"#
    );
    assert_eq!(body["term"], 2);
    assert_eq!(body["timeline"], 2);
    assert_eq!(body["promoted"], true);
    let (code, body) = post(&replica, "/pg/promote", Some(TOKEN), r#"{"term":2}"#).await;
    assert_eq!(code, 200, "retry: {body}");
    assert_eq!(body["promoted"], false);
    assert_eq!(body["timeline"], 2);
    let (code, body) = post(&replica, "/pg/promote", Some(TOKEN), r#"{"term":3}"#).await;
    assert_eq!(code, 409, "a primary of term 2 asked for term 3: {body}");

    // The promoted instance takes writes on timeline 2 (acknowledged locally: its only
    // synchronous standby, "nobody", does not exist).
    exec(
        &replica,
        "SET synchronous_commit = local; INSERT INTO t VALUES (503, 2)",
    )
    .await;
    assert_eq!(count_rows(&replica).await, Some(503));
    assert_eq!(
        query(&replica, "SELECT timeline_id FROM pg_control_checkpoint()").await,
        "2"
    );
    let promoted = status(&replica).await.unwrap_or_default();
    assert_eq!(promoted["role"], "primary", "{promoted}");
    assert_eq!(promoted["timeline"], 2, "{promoted}");
    assert_eq!(promoted["replication"]["role"], "primary");
    assert_eq!(promoted["replication"]["term"], 2);
    assert!(!replica.pgdata.join("standby.signal").exists());
    assert_eq!(lb_status(&replica, "/primary").await, 200);
    assert_eq!(lb_status(&replica, "/replica").await, 503);
    assert_eq!(
        metric(&metrics, "pgsteward_pg_replication_in_recovery").await,
        Some(0.0)
    );

    eprintln!(
        "{version:?}: clone {}; promotion {}",
        log_field(
            &replica.dir.join("manager-0.log"),
            "clone complete",
            "elapsed_ms"
        ),
        log_field(&replica_manager.log_path, "promoted:", "total_ms"),
    );

    // The role survives a restart of the manager.
    replica_manager.signal(Signal::SIGTERM).await;
    let mut replica_manager = replica_manager;
    assert_eq!(replica_manager.wait_exit(EXIT).await, 0);
    let replica_manager = replica.spawn();
    replica_manager.wait_ready(READY).await;
    let restarted = status(&replica).await.unwrap_or_default();
    assert_eq!(restarted["role"], "primary", "{restarted}");
    assert_eq!(restarted["replication"]["term"], 2, "{restarted}");
    assert!(!replica.pgdata.join("standby.signal").exists());
    // ... and so do the synchronous standby names it was promoted with.
    assert_eq!(
        query(&replica, "SHOW synchronous_standby_names").await,
        r#"ANY 1 ("nobody")"#
    );
    exec(
        &replica,
        "SET synchronous_commit = local; INSERT INTO t VALUES (504, 2)",
    )
    .await;
    drop(replica_manager);
    drop(primary_manager);
}
for_each_version!(replica_streams_and_promotes);

async fn clone_from_unreachable_primary_fails_cleanly(version: PgVersion) {
    let nobody = pgsteward_testkit::free_port();
    let replica = replica_of(version, nobody);
    let mut manager = replica.spawn();
    let code = manager.wait_exit(READY).await;
    let log = manager.log();
    assert_eq!(code, 1, "{log}");
    assert!(log.contains("pg_basebackup from 127.0.0.1"), "{log}");
    assert!(log.contains("bootstrap failed"), "{log}");
    let left: Vec<_> = std::fs::read_dir(&replica.pgdata)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "the data directory is not empty: {left:?}");

    // The next start tries again (the directory is empty), and fails the same way.
    let mut manager = replica.spawn();
    assert_eq!(manager.wait_exit(READY).await, 1);

    // A reachable primary that refuses the password: named in the error, directory empty.
    let primary = Instance::new(options(version));
    let primary_manager = primary.spawn();
    primary_manager.wait_ready(READY).await;
    let replica = replica_of(version, primary.pg_port);
    replica.dir.write("superuser.pw", "not-the-password\n");
    let mut manager = replica.spawn();
    assert_eq!(manager.wait_exit(READY).await, 1);
    let log = manager.log();
    assert!(log.contains("password authentication failed"), "{log}");
    assert!(
        !log.contains("not-the-password"),
        "the password leaked into the log"
    );
    let left = std::fs::read_dir(&replica.pgdata)
        .map(|d| d.count())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(left, 0);
    drop(primary_manager);
}
for_each_version!(clone_from_unreachable_primary_fails_cleanly);

async fn archive_recovery_and_slot_reuse(version: PgVersion) {
    let scratch = pgsteward_testkit::fsutil::ScratchDir::new();
    let store = scratch.mkdir("store", 0o700);
    let archive_args = file_archive_args(&store);
    let mut primary_options = options(version);
    primary_options.args.clone_from(&archive_args);
    let primary = Instance::new(primary_options);
    let primary_manager = primary.spawn();
    primary_manager.wait_ready(READY).await;
    exec(&primary, "CREATE TABLE t (id int PRIMARY KEY, tli int)").await;

    let mut replica = replica_of(version, primary.pg_port);
    replica.options.args.extend(archive_args.iter().cloned());
    let slot = format!("test_{}", replica.pg_port);
    let mut replica_manager = replica.spawn();
    replica_manager.wait_ready(READY).await;
    wait_streaming(&replica).await;
    let conf = std::fs::read_to_string(replica.pgdata.join("pgsteward.conf")).unwrap_or_default();
    assert!(conf.contains("wal-restore --pgdata"), "{conf}");
    let standby_conf = std::fs::read_to_string(replica.pgdata.join("pgsteward.replication.conf"))
        .unwrap_or_default();
    assert!(
        standby_conf.contains("recovery_target_timeline = 'latest'"),
        "{standby_conf}"
    );
    assert!(
        standby_conf.contains(&format!("primary_slot_name = '{slot}'")),
        "{standby_conf}"
    );
    assert!(
        !standby_conf.contains(PASSWORD),
        "the password leaked: {standby_conf}"
    );

    // POST /pg/slots/drop keeps a slot in use, and checks the term and the names first.
    let drop_body =
        |term: u64| format!("{{\"term\":{term},\"slots\":[\"{slot}\",\"no_such_slot\"]}}");
    let (code, answer) = post(&primary, "/pg/slots/drop", Some(TOKEN), &drop_body(1)).await;
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["active"], serde_json::json!([slot]), "{answer}");
    assert_eq!(
        answer["missing"],
        serde_json::json!(["no_such_slot"]),
        "{answer}"
    );
    assert_eq!(answer["dropped"], serde_json::json!([]), "{answer}");
    let (code, answer) = post(&primary, "/pg/slots/drop", Some(TOKEN), &drop_body(2)).await;
    assert_eq!(code, 409, "{answer}");
    assert!(
        answer.to_string().contains("not this instance's term 1"),
        "{answer}"
    );
    let (code, answer) = post(
        &primary,
        "/pg/slots/drop",
        Some(TOKEN),
        "{\"term\":1,\"slots\":[\"x'; DROP\"]}",
    )
    .await;
    assert_eq!(code, 400, "{answer}");
    assert_eq!(
        post(&primary, "/pg/slots/drop", None, &drop_body(1))
            .await
            .0,
        401
    );

    // Without its slot the standby cannot stream; it replays what the archive has.
    replica_manager.signal(Signal::SIGTERM).await;
    assert_eq!(replica_manager.wait_exit(EXIT).await, 0);
    // The walsender may outlive the standby's exit by a moment.
    wait_for("the slot dropped through the API", CATCH_UP, || async {
        let (code, answer) = post(&primary, "/pg/slots/drop", Some(TOKEN), &drop_body(1)).await;
        assert_eq!(code, 200, "{answer}");
        (answer["dropped"] == serde_json::json!([slot])).then_some(())
    })
    .await;
    // A dropped slot's series go away.
    let slot_active = format!("pgsteward_pg_replication_slot_active{{slot_name=\"{slot}\"}}");
    assert_eq!(metric(&primary.metrics(), &slot_active).await, None);
    exec(
        &primary,
        "INSERT INTO t SELECT g, 1 FROM generate_series(1, 1000) g",
    )
    .await;
    query(&primary, "SELECT pg_switch_wal()::text").await;
    let replica_manager = replica.spawn();
    replica_manager.wait_ready(READY).await;
    wait_for("1000 rows replayed from the archive", CATCH_UP, || async {
        (count_rows(&replica).await? == 1000).then_some(())
    })
    .await;
    // The manager relays postgres's log a moment after postgres wrote it.
    wait_for(
        "'restored log file' (WAL restored from the archive) in the replica's log",
        Duration::from_secs(10),
        || async {
            replica_manager
                .log()
                .contains("restored log file")
                .then_some(())
        },
    )
    .await;
    // The slot is back: streaming resumes.
    exec(
        &primary,
        &format!("SELECT pg_create_physical_replication_slot('{slot}')"),
    )
    .await;
    wait_streaming(&replica).await;

    // A re-clone (empty data directory) reuses the slot of its name.
    drop(replica_manager);
    for entry in std::fs::read_dir(&replica.pgdata)
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            std::fs::remove_dir_all(&path).unwrap_or_else(|e| panic!("{e}"));
        } else {
            std::fs::remove_file(&path).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    wait_for("the slot to be released", CATCH_UP, || async {
        let active = query(
            &primary,
            &format!("SELECT active::text FROM pg_replication_slots WHERE slot_name = '{slot}'"),
        )
        .await;
        (active == "false").then_some(())
    })
    .await;
    // ... after an interrupted clone: the marker and a partial copy, half moved into place.
    std::fs::write(
        replica.pgdata.join("pgsteward.bootstrap-incomplete"),
        "basebackup clone in progress\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(replica.pgdata.join(".pgsteward-clone/base/1"))
        .unwrap_or_else(|e| panic!("{e}"));
    std::fs::create_dir_all(replica.pgdata.join("global")).unwrap_or_else(|e| panic!("{e}"));
    let chowned = std::process::Command::new("chown")
        .args(["-R", "postgres:postgres"])
        .arg(&replica.pgdata)
        .status();
    assert!(chowned.is_ok_and(|s| s.success()));
    let replica_manager = replica.spawn();
    replica_manager.wait_ready(READY).await;
    let log = replica_manager.log();
    assert!(log.contains("an earlier clone was interrupted"), "{log}");
    assert!(log.contains("reusing it"), "{log}");
    wait_streaming(&replica).await;

    // The promoted standby archives its timeline history.
    let (code, body) = post(&replica, "/pg/promote", Some(TOKEN), r#"{"term":2}"#).await;
    assert_eq!(code, 200, "{body}");
    let history = store.join("cluster/wals/00000002.history.gz");
    wait_for(
        "the timeline 2 history in the archive",
        CATCH_UP,
        || async { history.exists().then_some(()) },
    )
    .await;
    drop(replica_manager);
    drop(primary_manager);
}
for_each_version!(archive_recovery_and_slot_reuse);
