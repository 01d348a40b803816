//! A three-instance cluster on loopback for the fault tests, `cargo xtask bench failover` and
//! `cargo xtask demo`: member `a` is initialised with initdb and starts as the primary, `b` and
//! `c` are cloned from it (`bootstrap.method: basebackup`), all three archive to one file://
//! store, and one coordinator watches them with `synchronous: {method: any, number: 1,
//! data_durability: required}` and a short poll interval and failure threshold. Optionally
//! each member lives in its own network namespace (`netns`) so it can be cut off.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::coordinator::Coordinator;
use crate::fsutil::ScratchDir;
use crate::manager::{Instance, Manager, PASSWORD};
use crate::netns::Network;
use crate::{wait_for, ManagerOptions, PgVersion};

/// Member names, in order; `a` starts as the primary.
pub const NAMES: [&str; 3] = ["a", "b", "c"];

/// Bearer token of the coordinator's mutating routes (`POST /switchover`).
pub const COORDINATOR_TOKEN: &str = "coordinator-test-token";

/// How to build the cluster.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// The `pgsteward` binary.
    pub pgsteward: PathBuf,
    /// The `pgsteward-coordinator` binary.
    pub coordinator: PathBuf,
    pub version: PgVersion,
    pub poll_interval: Duration,
    pub request_timeout: Duration,
    pub failure_threshold: Duration,
    /// Extra `--set` arguments for every manager.
    pub manager_args: Vec<String>,
    /// How long an instance may take to become ready.
    pub ready_timeout: Duration,
    /// Put each member in its own network namespace on a bridge (`netns::Network`), so a
    /// partition can be made; otherwise all on 127.0.0.1.
    pub network_namespaces: bool,
    /// Give every manager an `ha` section (the coordinator's URL, the other members as
    /// peers, this isolation timeout) so that isolated primaries fence themselves and a
    /// restarted former primary waits for its role; None: no `ha` section.
    pub ha_isolation_timeout: Option<Duration>,
    /// The coordinator's `switchover_timeout` (None: its default).
    pub switchover_timeout: Option<Duration>,
    /// The coordinator's `switchover_confirm_timeout` (None: its default; zero: no check).
    pub switchover_confirm_timeout: Option<Duration>,
}

impl ClusterOptions {
    pub fn new(pgsteward: &Path, coordinator: &Path, version: PgVersion) -> Self {
        ClusterOptions {
            pgsteward: pgsteward.to_path_buf(),
            coordinator: coordinator.to_path_buf(),
            version,
            poll_interval: Duration::from_millis(250),
            request_timeout: Duration::from_millis(500),
            failure_threshold: Duration::from_millis(1500),
            manager_args: Vec::new(),
            ready_timeout: Duration::from_secs(120),
            network_namespaces: false,
            ha_isolation_timeout: None,
            switchover_timeout: None,
            switchover_confirm_timeout: None,
        }
    }
}

/// One member: its files and ports, and its manager while it runs.
#[derive(Debug)]
pub struct Member {
    pub name: &'static str,
    pub instance: Instance,
    pub manager: Option<Manager>,
}

/// Three managers, a file:// archive and a coordinator.
#[derive(Debug)]
pub struct Cluster {
    pub options: ClusterOptions,
    /// Coordinator config, state and log, and the archive (`archive/`).
    pub dir: ScratchDir,
    pub archive: PathBuf,
    pub members: Vec<Member>,
    pub coordinator: Coordinator,
    /// The namespaces (dropped last, after the managers).
    pub network: Option<Network>,
}

impl Cluster {
    /// Start everything and wait until the coordinator sees `a` as primary, every member
    /// healthy and a `synchronous_standby_names` naming real standbys.
    pub async fn start(options: ClusterOptions) -> Self {
        let dir = ScratchDir::new();
        let network = options
            .network_namespaces
            .then(|| Network::create(NAMES.len()));
        let place = |opts: &mut ManagerOptions, i: usize| {
            if let Some(network) = &network {
                opts.host = network.members[i].address.clone();
                opts.netns = Some(network.members[i].netns.clone());
            }
        };
        let archive = dir.mkdir("archive", 0o700);
        let mut common = vec![
            format!("--set=archive.destination=file://{}", archive.display()),
            "--set=archive.server_name=cluster".to_owned(),
            "--set=archive.wal.gzip_level=1".to_owned(),
        ];
        common.extend(options.manager_args.iter().cloned());
        let mut primary_options =
            ManagerOptions::new(&options.pgsteward.display().to_string(), options.version);
        primary_options.args.clone_from(&common);
        place(&mut primary_options, 0);
        let mut instances = vec![Instance::new(primary_options)];
        let primary_port = instances[0].pg_port;
        let primary_host = instances[0].options.host.clone();
        for i in 1..NAMES.len() {
            let mut opts =
                ManagerOptions::new(&options.pgsteward.display().to_string(), options.version);
            opts.args.clone_from(&common);
            place(&mut opts, i);
            let mut instance = Instance::new(opts);
            let password_file = instance.dir.join("superuser.pw");
            instance.options.args.extend([
                "--set=bootstrap.method=basebackup".to_owned(),
                format!("--set=bootstrap.basebackup.host={primary_host}"),
                format!("--set=bootstrap.basebackup.port={primary_port}"),
                format!(
                    "--set=bootstrap.basebackup.password_file={}",
                    password_file.display()
                ),
            ]);
            instances.push(instance);
        }
        let coordinator_host = network
            .as_ref()
            .map_or_else(|| "127.0.0.1".to_owned(), |n| n.gateway.clone());
        let coordinator_port = crate::free_port();
        if let Some(isolation) = options.ha_isolation_timeout {
            let apis: Vec<String> = instances.iter().map(Instance::api).collect();
            for (i, instance) in instances.iter_mut().enumerate() {
                let peers: Vec<String> = apis
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, a)| format!("    - {a}\n"))
                    .collect();
                instance.options.extra_yaml.push_str(&format!(
                    "ha:\n  coordinator_url: http://{coordinator_host}:{coordinator_port}\n  \
                     isolation_timeout: {}ms\n  check_interval: 250ms\n  request_timeout: 400ms\n  \
                     peers:\n{}",
                    isolation.as_millis(),
                    peers.concat()
                ));
                instance.write_config("");
            }
        }
        let mut members = Vec::new();
        // One clone at a time: two concurrent pg_basebackup runs against the fresh primary
        // sometimes lose their stream ("terminating connection due to administrator
        // command"; not understood yet), which failed cluster starts.
        for (name, instance) in NAMES.iter().zip(instances) {
            let manager = instance.spawn();
            manager.wait_ready(options.ready_timeout).await;
            members.push(Member {
                name,
                instance,
                manager: Some(manager),
            });
        }
        dir.write("coordinator.token", COORDINATOR_TOKEN);
        let yaml = coordinator_yaml(&options, dir.path(), &members.iter().collect::<Vec<_>>());
        let coordinator = Coordinator::start_at(
            &options.coordinator,
            dir.path(),
            "coordinator",
            &yaml,
            &coordinator_host,
            coordinator_port,
        );
        let cluster = Cluster {
            options,
            dir,
            archive,
            members,
            coordinator,
            network,
        };
        let ready = cluster.options.ready_timeout;
        wait_for(
            "the coordinator to see a healthy cluster",
            ready,
            || async {
                let s = cluster.coordinator.status().await?;
                let all_healthy = s["members"]
                    .as_array()?
                    .iter()
                    .all(|m| m["healthy"] == true);
                let names = s["synchronous_standby_names"].as_str()?;
                (s["primary"] == "a"
                    && all_healthy
                    && names.starts_with("ANY 1 (\"test-")
                    && !names.contains("pgsteward_no_standby"))
                .then_some(())
            },
        )
        .await;
        cluster
    }

    /// A libpq connection string naming all three members; `target_session_attrs=read-write`
    /// finds the primary.
    pub fn conninfo(&self) -> String {
        let ports: Vec<String> = self
            .members
            .iter()
            .map(|m| m.instance.pg_port.to_string())
            .collect();
        let hosts: Vec<&str> = self
            .members
            .iter()
            .map(|m| m.instance.options.host.as_str())
            .collect();
        format!(
            "host={} port={} user=postgres password={PASSWORD} \
             dbname=postgres target_session_attrs=read-write connect_timeout=1",
            hosts.join(","),
            ports.join(",")
        )
    }

    /// The member called `name`.
    pub fn member(&self, name: &str) -> &Member {
        self.members
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no member {name}"))
    }

    /// Mutable access to the member called `name`.
    pub fn member_mut(&mut self, name: &str) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("no member {name}"))
    }

    /// The coordinator's current primary (None while it has none or does not answer).
    pub async fn primary(&self) -> Option<String> {
        let s = self.coordinator.status().await?;
        s["primary"].as_str().map(str::to_owned)
    }

    /// Wait until the coordinator names a primary other than `old`; returns its name.
    pub async fn wait_new_primary(&self, old: &str, timeout: Duration) -> String {
        wait_for("a new primary", timeout, || async {
            let p = self.primary().await?;
            (p != old).then_some(p)
        })
        .await
    }

    /// `POST /switchover {"to": to}` on the coordinator with its token.
    pub async fn switchover(&self, to: &str) -> Option<crate::http::Response> {
        self.switchover_with(to, Some(COORDINATOR_TOKEN)).await
    }

    /// `POST /switchover {"to": to}` with the given bearer token (None: no header).
    pub async fn switchover_with(
        &self,
        to: &str,
        token: Option<&str>,
    ) -> Option<crate::http::Response> {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth.as_str()));
        }
        crate::http::request(
            "POST",
            &self.coordinator.url("/switchover"),
            &headers,
            &format!("{{\"to\":\"{to}\"}}"),
        )
        .await
    }

    /// Start the coordinator again (after `coordinator.stop()`) on the same address and
    /// state file.
    pub fn restart_coordinator(&mut self) {
        self.restart_coordinator_with(&NAMES);
    }

    /// Start the coordinator again with only the members named in `keep` in its
    /// configuration (a member removed from the cluster).
    pub fn restart_coordinator_with(&mut self, keep: &[&str]) {
        self.coordinator.stop();
        let members: Vec<&Member> = self
            .members
            .iter()
            .filter(|m| keep.contains(&m.name))
            .collect();
        let yaml = coordinator_yaml(&self.options, self.dir.path(), &members);
        let (host, port) = (self.coordinator.host.clone(), self.coordinator.port);
        self.coordinator = Coordinator::start_at(
            &self.options.coordinator,
            self.dir.path(),
            "coordinator",
            &yaml,
            &host,
            port,
        );
    }

    /// Start (again) the manager of `name` on its existing data directory.
    pub fn restart(&mut self, name: &str) {
        let member = self.member_mut(name);
        // Dropping a manager handle kills what is left of it (and its postmaster).
        member.manager = None;
        member.manager = Some(member.instance.spawn());
    }

    /// The replication slot member `name` creates on its primary (its `instance_name` is
    /// `test-<port>`).
    pub fn slot_of(&self, name: &str) -> String {
        format!("test_{}", self.member(name).instance.pg_port)
    }

    /// Wait until `name` reports exactly the physical replication slots of the members `of`
    /// (see `slot_of`).
    pub async fn wait_slots_of(&self, name: &str, of: &[&str], timeout: Duration) {
        let mut expected: Vec<String> = of.iter().map(|m| self.slot_of(m)).collect();
        expected.sort();
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let status = self.member_status(name).await.unwrap_or(Value::Null);
            let slots: Option<Vec<String>> = status["replication"]["slots"].as_array().map(|a| {
                a.iter()
                    .filter_map(|s| s["slot_name"].as_str().map(str::to_owned))
                    .collect()
            });
            if slots.as_ref() == Some(&expected) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {name}'s replication slots to be {expected:?}: last seen {slots:?}\ncoordinator log:\n{}",
                self.coordinator.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `GET /pg/status` of `name` with a short timeout (None when hung or down).
    pub async fn member_status(&self, name: &str) -> Option<Value> {
        let url = format!("{}/pg/status", self.member(name).instance.api());
        tokio::time::timeout(Duration::from_secs(2), crate::http::get(&url))
            .await
            .ok()
            .flatten()
            .map(|r| r.json())
    }

    /// The ids `report`'s writer had acknowledged that member `name`'s table lacks.
    pub async fn missing_acks(
        &self,
        name: &str,
        report: &crate::writer::Report,
    ) -> anyhow::Result<Vec<i64>> {
        let instance = &self.member(name).instance;
        let present =
            crate::writer::ids_on(&instance.options.host, instance.pg_port, PASSWORD).await?;
        Ok(report.missing(&present))
    }

    /// Run one statement on member `name`'s postgres.
    pub async fn sql(&self, name: &str, query: &str) -> anyhow::Result<Vec<Vec<Option<String>>>> {
        let instance = &self.member(name).instance;
        crate::sql_at(
            &instance.options.host,
            instance.pg_port,
            "postgres",
            PASSWORD,
            "postgres",
            query,
        )
        .await
    }
}

fn coordinator_yaml(options: &ClusterOptions, dir: &Path, members: &[&Member]) -> String {
    let mut yaml = format!(
        "state_file: {}\napi_token_file: {}\npoll_interval: {}ms\nrequest_timeout: {}ms\n\
         failure_threshold: {}ms\n\
         synchronous:\n  method: any\n  number: 1\n  data_durability: required\n",
        dir.join("state.json").display(),
        dir.join("coordinator.token").display(),
        options.poll_interval.as_millis(),
        options.request_timeout.as_millis(),
        options.failure_threshold.as_millis(),
    );
    if let Some(timeout) = options.switchover_timeout {
        yaml.push_str(&format!("switchover_timeout: {}ms\n", timeout.as_millis()));
    }
    if let Some(timeout) = options.switchover_confirm_timeout {
        yaml.push_str(&format!(
            "switchover_confirm_timeout: {}ms\n",
            timeout.as_millis()
        ));
    }
    yaml.push_str("members:\n");
    for member in members {
        let i = &member.instance;
        yaml.push_str(&format!(
            "- name: {}\n  url: {}\n  token_file: {}\n  postgres: {}:{}\n",
            member.name,
            i.api(),
            i.dir.join("api.token").display(),
            i.options.host,
            i.pg_port
        ));
    }
    yaml
}
