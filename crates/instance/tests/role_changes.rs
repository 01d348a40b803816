//! Role changes between real managers on loopback (PG15 and PG18): a switchover by hand
//! (demote A under B, B promoted, A streams from B; a third standby repointed with follow),
//! a diverged old primary rewound by follow, the rewind-failure policy (fence, then re-clone),
//! stale terms refused with 409 and retries answered 200 without a second change; a demotion
//! whose `confirm_standby` does not confirm is refused with 409 and changes nothing.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

/// Bound for rows or status to reach a standby.
const CATCH_UP: Duration = Duration::from_secs(90);

/// A primary whose standby settings (after a demotion) carry the superuser password.
fn primary_instance(version: PgVersion, extra: &[String]) -> Instance {
    let mut instance = Instance::new(options(version));
    // pg_rewind reads the target's WAL from the last common checkpoint: keep it (in
    // production the archive serves it through --restore-target-wal).
    instance
        .options
        .parameters
        .push(("wal_keep_size".into(), "256MB".into()));
    instance.write_config("");
    let password_file = instance.dir.join("superuser.pw");
    instance.options.args = vec![format!(
        "--set=bootstrap.basebackup.password_file={}",
        password_file.display()
    )];
    instance.options.args.extend_from_slice(extra);
    instance
}

/// A replica of `primary_port` (not started): clones with pg_basebackup as the superuser.
fn replica_of(version: PgVersion, primary_port: u16) -> Instance {
    let mut replica = primary_instance(version, &[]);
    replica.options.args.extend([
        "--set=bootstrap.method=basebackup".into(),
        "--set=bootstrap.basebackup.host=127.0.0.1".into(),
        format!("--set=bootstrap.basebackup.port={primary_port}"),
    ]);
    replica
}

/// `POST path` with the token and a JSON body.
async fn post_json(instance: &Instance, path: &str, body: &Value) -> (u16, Value) {
    post(instance, path, Some(TOKEN), &body.to_string()).await
}

fn change(term: u64, primary: &Instance) -> Value {
    json!({"term": term, "primary": {"host": "127.0.0.1", "port": primary.pg_port}})
}

async fn status(instance: &Instance) -> Option<Value> {
    Some(
        http::get(&format!("{}/pg/status", instance.api()))
            .await?
            .json(),
    )
}

async fn value(instance: &Instance, sql: &str) -> Option<String> {
    pgsteward_testkit::sql_value(instance.pg_port, PASSWORD, sql)
        .await
        .ok()
}

/// Wait until `instance` streams from `upstream`.
async fn wait_streaming_from(instance: &Instance, upstream: &Instance) -> Value {
    let expected = format!("127.0.0.1:{}", upstream.pg_port);
    wait_for(
        "the standby to stream from its new upstream",
        CATCH_UP,
        || async {
            let status = status(instance).await?;
            let replication = &status["replication"];
            (replication["role"] == "replica"
                && replication["upstream"] == expected.as_str()
                && replication["receiver"]["wal_receiver_status"] == "streaming")
                .then_some(status)
        },
    )
    .await
}

/// Wait until `sql` answers `expected` on `instance`.
async fn wait_value(instance: &Instance, sql: &str, expected: &str) {
    wait_for(&format!("{sql} = {expected}"), CATCH_UP, || async {
        (value(instance, sql).await?.as_str() == expected).then_some(())
    })
    .await;
}

fn lsn(text: &str) -> u64 {
    let (hi, lo) = text
        .split_once('/')
        .unwrap_or_else(|| panic!("not an LSN: {text}"));
    let part = |p: &str| u64::from_str_radix(p, 16).unwrap_or_else(|e| panic!("{text}: {e}"));
    (part(hi) << 32) | part(lo)
}

/// A (primary), B and C standbys of A; demote A under B, wait for B to have A's shutdown
/// checkpoint, promote B (term 2), A streams from B; follow repoints C to B.
async fn switchover_by_demote_and_follow(version: PgVersion) {
    let a = primary_instance(version, &[]);
    let a_manager = a.spawn();
    a_manager.wait_ready(READY).await;
    exec(&a, "CREATE TABLE t (id int PRIMARY KEY, origin text)").await;
    exec(
        &a,
        "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 100) g",
    )
    .await;
    let b = replica_of(version, a.pg_port);
    let b_manager = b.spawn();
    b_manager.wait_ready(READY).await;
    let c = replica_of(version, a.pg_port);
    let c_manager = c.spawn();
    c_manager.wait_ready(READY).await;
    wait_streaming_from(&b, &a).await;
    wait_streaming_from(&c, &a).await;

    // Stale terms and malformed bodies change nothing.
    let (code, body) = post_json(&a, "/pg/demote", &json!({"term": 2})).await;
    assert_eq!(code, 400, "{body}");
    // A primary may not follow in its own term.
    let (code, body) = post_json(&a, "/pg/follow", &change(1, &b)).await;
    assert_eq!(code, 409, "{body}");

    // A standby named for confirmation that never confirms: refused, A stays a writable
    // primary; nothing is shut down.
    let pid = a_manager.postmaster_host_pid().await;
    let mut unconfirmed = change(2, &b);
    unconfirmed["confirm_standby"] = json!({"application_name": "nobody", "timeout_ms": 300});
    let (code, body) = post_json(&a, "/pg/demote", &unconfirmed).await;
    assert_eq!(code, 409, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("standby nobody has not confirmed the WAL up to")
            && message.contains("within 300 ms (it is not connected)")
            && message.contains("not demoting, this instance stays primary"),
        "{body}"
    );
    exec(&a, "CREATE TABLE written_after_the_refusal (i int)").await;
    assert_eq!(a_manager.postmaster_host_pid().await, pid);
    let mut empty_name = change(2, &b);
    empty_name["confirm_standby"] = json!({"application_name": "", "timeout_ms": 300});
    assert_eq!(post_json(&a, "/pg/demote", &empty_name).await.0, 400);

    // Confirmed by B (its application_name is its instance_name), then demoted.
    let b_status = status(&b).await.unwrap_or_default();
    let b_name = b_status["instance_name"].as_str().unwrap_or_default();
    assert!(!b_name.is_empty(), "{b_status}");
    let mut confirmed = change(2, &b);
    confirmed["confirm_standby"] = json!({"application_name": b_name, "timeout_ms": 10_000});
    let started = std::time::Instant::now();
    let (code, demoted) = post_json(&a, "/pg/demote", &confirmed).await;
    let demote_ms = started.elapsed().as_millis();
    assert_eq!(code, 200, "{demoted}\n{}", a_manager.log());
    assert_eq!(demoted["changed"], true, "{demoted}");
    assert_eq!(demoted["term"], 2, "{demoted}");
    assert_eq!(demoted["timeline"], 1, "{demoted}");
    let checkpoint = lsn(demoted["shutdown_checkpoint_lsn"]
        .as_str()
        .unwrap_or_default());
    // The candidate receives everything up to the shutdown checkpoint.
    wait_for("B to receive A's shutdown checkpoint", CATCH_UP, || async {
        let status = status(&b).await?;
        let received = status["replication"]["receiver"]["received_lsn"].as_str()?;
        (lsn(received) > checkpoint).then_some(())
    })
    .await;
    let (code, promoted) = post_json(&b, "/pg/promote", &json!({"term": 2})).await;
    assert_eq!(code, 200, "{promoted}");
    assert_eq!(promoted["timeline"], 2, "{promoted}");
    let a_status = wait_streaming_from(&a, &b).await;
    assert_eq!(a_status["replication"]["term"], 2, "{a_status}");
    eprintln!("{version:?}: demote answered in {demote_ms} ms");

    // A retry answers the same without a restart; a stale term is refused.
    let pid = a_manager.postmaster_host_pid().await;
    let (code, again) = post_json(&a, "/pg/demote", &change(2, &b)).await;
    assert_eq!(code, 200, "{again}");
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(
        again["shutdown_checkpoint_lsn"], demoted["shutdown_checkpoint_lsn"],
        "{again}"
    );
    let (code, body) = post_json(&a, "/pg/demote", &change(1, &b)).await;
    assert_eq!(code, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("current term 2"),
        "{body}"
    );
    let (code, body) = post_json(&a, "/pg/follow", &change(2, &b)).await;
    assert_eq!(
        (code, body["action"].clone()),
        (200, json!("none")),
        "{body}"
    );
    assert_eq!(a_manager.postmaster_host_pid().await, pid);

    // Follow repoints C from A (now a standby) to B.
    let (code, followed) = post_json(&c, "/pg/follow", &change(2, &b)).await;
    assert_eq!(code, 200, "{followed}\n{}", c_manager.log());
    assert_eq!(followed["action"], "repointed", "{followed}");
    wait_streaming_from(&c, &b).await;

    exec(
        &b,
        "INSERT INTO t SELECT g, 'b' FROM generate_series(101, 200) g",
    )
    .await;
    wait_value(&a, "SELECT count(*) FROM t", "200").await;
    wait_value(&c, "SELECT count(*) FROM t", "200").await;
    let a_status = status(&a).await.unwrap_or_default();
    assert_eq!(
        a_status["replication"]["receiver"]["received_timeline"], 2,
        "{a_status}"
    );
}
for_each_version!(switchover_by_demote_and_follow);

/// Two primaries after a promotion that A did not hear of: follow rewinds A onto B.
async fn diverged_primary_is_rewound(version: PgVersion) {
    let a = primary_instance(version, &[]);
    let a_manager = a.spawn();
    a_manager.wait_ready(READY).await;
    exec(&a, "CREATE TABLE t (id int PRIMARY KEY, origin text)").await;
    exec(
        &a,
        "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 100) g",
    )
    .await;
    let b = replica_of(version, a.pg_port);
    let b_manager = b.spawn();
    b_manager.wait_ready(READY).await;
    wait_streaming_from(&b, &a).await;
    wait_value(&b, "SELECT count(*) FROM t", "100").await;
    let (code, body) = post_json(&b, "/pg/promote", &json!({"term": 2})).await;
    assert_eq!(code, 200, "{body}");
    // A keeps writing on timeline 1: the histories diverge.
    exec(
        &a,
        "INSERT INTO t SELECT g, 'lost' FROM generate_series(1001, 1100) g",
    )
    .await;
    exec(
        &b,
        "INSERT INTO t SELECT g, 'b' FROM generate_series(101, 150) g",
    )
    .await;

    let (code, body) = post_json(&a, "/pg/follow", &change(1, &b)).await;
    assert_eq!(code, 409, "{body}");
    let started = std::time::Instant::now();
    let (code, followed) = post_json(&a, "/pg/follow", &change(2, &b)).await;
    let follow_ms = started.elapsed().as_millis();
    assert_eq!(code, 200, "{followed}\n{}", a_manager.log());
    assert_eq!(followed["action"], "rewound", "{followed}");
    wait_streaming_from(&a, &b).await;
    wait_value(&a, "SELECT count(*) FROM t", "150").await;
    assert_eq!(
        value(&a, "SELECT count(*) FROM t WHERE origin = 'lost'")
            .await
            .as_deref(),
        Some("0")
    );
    exec(&b, "INSERT INTO t VALUES (151, 'b')").await;
    wait_value(&a, "SELECT count(*) FROM t", "151").await;
    eprintln!("{version:?}: follow with pg_rewind answered in {follow_ms} ms");
}
for_each_version!(diverged_primary_is_rewound);

/// pg_rewind cannot work (the diverged WAL of A is gone): with `fence` A stays stopped and
/// fenced and says why; with `reclone` it is cloned again from B and streams.
async fn rewind_failure_policy(version: PgVersion) {
    let a = primary_instance(version, &[]);
    let mut a_manager = a.spawn();
    a_manager.wait_ready(READY).await;
    exec(&a, "CREATE TABLE t (id int PRIMARY KEY, origin text)").await;
    exec(
        &a,
        "INSERT INTO t SELECT g, 'a' FROM generate_series(1, 100) g",
    )
    .await;
    let b = replica_of(version, a.pg_port);
    let b_manager = b.spawn();
    b_manager.wait_ready(READY).await;
    wait_streaming_from(&b, &a).await;
    wait_value(&b, "SELECT count(*) FROM t", "100").await;
    let (code, body) = post_json(&b, "/pg/promote", &json!({"term": 2})).await;
    assert_eq!(code, 200, "{body}");
    exec(
        &b,
        "INSERT INTO t SELECT g, 'b' FROM generate_series(101, 150) g",
    )
    .await;
    // A diverges, then loses the WAL pg_rewind needs to find what it changed.
    exec(
        &a,
        "INSERT INTO t SELECT g, 'lost' FROM generate_series(1001, 1100) g",
    )
    .await;
    for _ in 0..2 {
        exec(&a, "SELECT pg_switch_wal()").await;
        exec(
            &a,
            "INSERT INTO t VALUES (2000, 'x') ON CONFLICT DO NOTHING",
        )
        .await;
    }
    exec(&a, "CHECKPOINT").await;
    let current = current_walfile(&a).await;
    let wal_dir = a.pgdata.join("pg_wal");
    let mut removed = 0;
    let entries = std::fs::read_dir(&wal_dir).unwrap_or_else(|e| panic!("{e}"));
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.len() == 24 && name.chars().all(|c| c.is_ascii_hexdigit()) && name < current {
            std::fs::remove_file(wal_dir.join(&name)).unwrap_or_else(|e| panic!("{name}: {e}"));
            removed += 1;
        }
    }
    assert!(removed > 0, "no WAL segment before {current}");

    let (code, body) = post_json(&a, "/pg/follow", &change(2, &b)).await;
    assert_eq!(code, 500, "{body}\n{}", a_manager.log());
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(message.contains("pg_rewind failed"), "{message}");
    assert!(message.contains("fenced"), "{message}");
    let fenced = status(&a).await.unwrap_or_default();
    assert_eq!(fenced["state"], "fenced", "{fenced}");
    assert_eq!(fenced["replication"]["role"], "replica", "{fenced}");
    assert!(
        fenced["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("pg_rewind failed"),
        "{fenced}"
    );
    assert!(pgsteward_testkit::manager::postmaster_pid(&a.pgdata).is_none());

    // The same manager with `reclone`: the retry clones B again.
    a_manager.signal(nix::sys::signal::Signal::SIGTERM).await;
    a_manager.wait_exit(EXIT).await;
    let a_manager = a.spawn_with(&["--set=replication.rewind_failure=reclone".to_owned()]);
    let restarted = wait_for("the restarted manager to stay fenced", READY, || async {
        let status = status(&a).await?;
        (status["state"] == "fenced").then_some(status)
    })
    .await;
    // The reason outlives the manager.
    assert!(
        restarted["last_error"]
            .as_str()
            .unwrap_or_default()
            .contains("pg_rewind failed"),
        "{restarted}"
    );
    let started = std::time::Instant::now();
    let (code, followed) = post_json(&a, "/pg/follow", &change(2, &b)).await;
    let reclone_ms = started.elapsed().as_millis();
    assert_eq!(code, 200, "{followed}\n{}", a_manager.log());
    assert_eq!(followed["action"], "recloned", "{followed}");
    wait_streaming_from(&a, &b).await;
    wait_value(&a, "SELECT count(*) FROM t", "150").await;
    assert!(!a.pgdata.join("pgsteward.fenced").exists());
    eprintln!("{version:?}: follow with a re-clone answered in {reclone_ms} ms");
}
for_each_version!(rewind_failure_policy);
