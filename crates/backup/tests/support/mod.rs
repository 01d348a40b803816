//! Shared by the retention tests against barman-cloud: a real S3 server (s3s-fs) with
//! store options for it, and barman-cloud-backup-delete (or barman's retention report) run
//! against a prefix of it.
//!
//! s3s-fs treats an empty `delimiter=` query parameter as a delimiter (real S3 treats it as
//! none), which hides every WAL and keep annotation from barman-cloud-backup-delete (it lists
//! those with `delimiter=""`). barman therefore runs through a small shim
//! ([`S3S_FS_SHIM`]) whose only change is to list without a delimiter in that case.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use pgsteward_archive::store::{open, ObjectStore, StoreOptions};
use pgsteward_backup::catalog::Catalog;
use pgsteward_backup::info::BackupInfo;
use pgsteward_testkit::s3::{write_credential_files, S3Server};

/// Objects to write: key below a prefix → body.
pub type Objects = Vec<(String, Vec<u8>)>;

pub fn barman_bin(tool: &str) -> PathBuf {
    let dir = std::env::var_os("PGSTEWARD_TEST_BARMAN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/pgsteward-ci/barman/bin"));
    let path = dir.join(tool);
    assert!(
        path.is_file(),
        "{} not found: run `cargo xtask prereqs` (installs barman[cloud] into /opt/pgsteward-ci/barman)",
        path.display()
    );
    path
}

/// Makes barman's `S3CloudInterface.list_bucket` send no delimiter when barman asks for an
/// empty one (see the module doc); followed by [`DELETE_MAIN`] or [`REPORT_MAIN`].
pub const S3S_FS_SHIM: &str = r#"
import sys
from barman.cloud_providers import aws_s3

_list_bucket = aws_s3.S3CloudInterface.list_bucket

def list_bucket(self, prefix="", delimiter="/"):
    if delimiter != "":
        return _list_bucket(self, prefix, delimiter)
    def keys():
        paginator = self.s3.meta.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket_name, Prefix=prefix):
            for item in page.get("Contents") or []:
                yield item["Key"]
    return keys()

aws_s3.S3CloudInterface.list_bucket = list_bucket
"#;

/// barman-cloud-backup-delete's entry point.
pub const DELETE_MAIN: &str = r#"
from barman.clients.cloud_backup_delete import main
sys.argv[0] = "barman-cloud-backup-delete"
main()
"#;

/// barman's retention report for barman-cloud-backup-delete's arguments, as JSON.
pub const REPORT_MAIN: &str = r#"
import json
from barman.clients.cloud_backup_delete import parse_arguments
from barman.cloud import CloudBackupCatalog
from barman.cloud_providers import get_cloud_interface
from barman.retention_policies import RetentionPolicyFactory
config = parse_arguments(sys.argv[1:])
catalog = CloudBackupCatalog(cloud_interface=get_cloud_interface(config), server_name=config.server_name)
policy = RetentionPolicyFactory.create("retention_policy", config.retention_policy, server_name=config.server_name, catalog=catalog, minimum_redundancy=config.minimum_redundancy)
print(json.dumps(policy.report()))
"#;

/// An s3s-fs server and the store options to reach it.
pub struct Env {
    pub s3: S3Server,
    pub options: StoreOptions,
    /// barman's server name of the catalogs.
    pub server: &'static str,
}

impl Env {
    pub async fn new(server: &'static str) -> Env {
        let s3 = S3Server::new().await;
        let (id_file, secret_file) = write_credential_files(s3.scratch());
        let options = StoreOptions {
            endpoint_url: Some(s3.endpoint()),
            region: Some("us-east-1".into()),
            force_path_style: true,
            access_key_id_file: Some(id_file),
            secret_access_key_file: Some(secret_file),
            ..StoreOptions::default()
        };
        Env {
            s3,
            options,
            server,
        }
    }

    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.s3.bucket())
    }

    pub async fn store(&self, prefix: &str) -> Arc<dyn ObjectStore> {
        open(&self.url(prefix), &self.options).await.unwrap()
    }

    /// The placeholders go straight into s3s-fs's directory (an object is a file there),
    /// which is much faster than PUTs; the backup.info files go through the S3 API.
    pub async fn write(&self, prefix: &str, objects: &Objects, infos: &[BackupInfo]) {
        for (key, body) in objects {
            let path = self.s3.object_path(&format!("{prefix}/{key}"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, body).unwrap();
        }
        let catalog = Catalog::new(self.store(prefix).await, self.server);
        for info in infos {
            catalog.write(info).await.unwrap();
        }
    }

    pub async fn keys(&self, prefix: &str) -> BTreeSet<String> {
        let store = self.store(prefix).await;
        store
            .list("")
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.key)
            .collect()
    }

    /// Run barman-cloud-backup-delete; returns whether it succeeded and its stderr.
    pub fn barman_delete(&self, prefix: &str, args: &[&str]) -> (bool, String) {
        let out = self.barman_python(DELETE_MAIN, prefix, args);
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// barman's retention report (backup id → status) for a policy.
    pub fn barman_report(&self, prefix: &str, args: &[&str]) -> BTreeMap<String, String> {
        let out = self.barman_python(REPORT_MAIN, prefix, args);
        assert!(
            out.status.success(),
            "barman report: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub fn barman_python(&self, main: &str, prefix: &str, args: &[&str]) -> std::process::Output {
        // The tool must be installed; its interpreter runs it through the shim.
        barman_bin("barman-cloud-backup-delete");
        Command::new(barman_bin("python"))
            .args(["-c", &format!("{S3S_FS_SHIM}{main}")])
            .env("AWS_ACCESS_KEY_ID", self.s3.access_key())
            .env("AWS_SECRET_ACCESS_KEY", self.s3.secret_key())
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .args([
                "--cloud-provider",
                "aws-s3",
                "--endpoint-url",
                &self.s3.endpoint(),
            ])
            .args(args)
            .arg(self.url(prefix))
            .arg(self.server)
            .output()
            .unwrap_or_else(|e| panic!("running barman-cloud-backup-delete: {e}"))
    }
}
