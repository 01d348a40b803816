//! A real S3 server for tests: `s3s-fs` (crates.io, installed by `cargo xtask prereqs`) on
//! 127.0.0.1 and a free port, serving a fresh root directory with fixed test credentials and
//! one bucket (a bucket is a directory below the root, an object a file below it). The handle
//! stops the server with SIGKILL and starts it again on the same port and root, and kills it
//! when dropped (and, through `PR_SET_PDEATHSIG`, when the thread that started it exits). A
//! missing `s3s-fs` panics with the install hint.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::fsutil::ScratchDir;
use crate::{free_port, http, wait_for};

/// Access key id the test server accepts.
pub const ACCESS_KEY: &str = "pgsteward-test-access-key";
/// Secret access key the test server accepts.
pub const SECRET_KEY: &str = "pgsteward-test-secret-key-0123456789";
/// The bucket every server starts with.
pub const BUCKET: &str = "pgsteward-test";

/// The `s3s-fs` binary: `PGSTEWARD_TEST_S3S_FS`, else `PATH`, else `~/.cargo/bin`; panics with
/// the install hint when none exists.
pub fn s3s_fs_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("PGSTEWARD_TEST_S3S_FS") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "PGSTEWARD_TEST_S3S_FS={} does not exist: run `cargo xtask prereqs` (cargo install s3s-fs@0.14.1 --features binary --locked)",
            path.display()
        );
        return path;
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("s3s-fs"))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let in_cargo_home =
        std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo/bin/s3s-fs"));
    on_path
        .into_iter()
        .chain(in_cargo_home)
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "s3s-fs (the S3 server of the archive tests) is not installed: run `cargo xtask prereqs` \
                 (or `cargo install s3s-fs@0.14.1 --features binary --locked`), or set PGSTEWARD_TEST_S3S_FS"
            )
        })
}

/// Write the test credentials to `<dir>/s3-access-key-id` and `<dir>/s3-secret-access-key`
/// (one line each, mode 0600), for `access_key_id_file` / `secret_access_key_file`.
pub fn write_credential_files(dir: &Path) -> (PathBuf, PathBuf) {
    write_credentials(dir, ACCESS_KEY, SECRET_KEY)
}

/// Write any credentials (e.g. wrong ones) the same way as `write_credential_files`.
pub fn write_credentials(dir: &Path, access_key: &str, secret_key: &str) -> (PathBuf, PathBuf) {
    let write = |name: &str, value: &str| {
        let path = dir.join(name);
        std::fs::write(&path, format!("{value}\n"))
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        path
    };
    (
        write("s3-access-key-id", access_key),
        write("s3-secret-access-key", secret_key),
    )
}

/// A running (or stopped) `s3s-fs`.
#[derive(Debug)]
pub struct S3Server {
    dir: ScratchDir,
    root: PathBuf,
    port: u16,
    binary: PathBuf,
    child: Option<Child>,
    log_path: PathBuf,
}

impl S3Server {
    /// Start a server with a fresh root holding the bucket `BUCKET`; returns once it answers
    /// HTTP requests.
    pub async fn new() -> S3Server {
        let binary = s3s_fs_binary();
        let dir = ScratchDir::new();
        let root = dir.join("root");
        std::fs::create_dir_all(root.join(BUCKET))
            .unwrap_or_else(|e| panic!("creating the bucket directory: {e}"));
        let mut server = S3Server {
            log_path: dir.join("s3s-fs.log"),
            dir,
            root,
            port: free_port(),
            binary,
            child: None,
        };
        server.start().await;
        server
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn bucket(&self) -> &str {
        BUCKET
    }

    pub fn access_key(&self) -> &str {
        ACCESS_KEY
    }

    pub fn secret_key(&self) -> &str {
        SECRET_KEY
    }

    /// The root directory: `<root>/<bucket>/<key>` is an object's file. s3s-fs keeps its own
    /// metadata (`.bucket-*.json`) and temporary files directly in the root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file of `key` (a full object key) in the bucket.
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.join(BUCKET).join(key)
    }

    /// A scratch directory next to the root (for credential files and the like).
    pub fn scratch(&self) -> &Path {
        self.dir.path()
    }

    /// Everything the server logged (stdout and stderr of every start).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Whether the process is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Start the server (again) on the same port and root; returns once it answers.
    pub async fn start(&mut self) {
        assert!(!self.is_running(), "s3s-fs is already running");
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", self.log_path.display()));
        let log_err = log.try_clone().unwrap_or_else(|e| panic!("{e}"));
        let mut command = Command::new(&self.binary);
        command
            .args(["--host", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&self.root)
            .env("RUST_LOG", "s3s_fs=info,s3s=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        // If the test process dies without running Drop, the server goes with it.
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} ({command:?}): {e}", self.binary.display()));
        self.child = Some(child);
        let url = format!("{}/", self.endpoint());
        let started = std::time::Instant::now();
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "s3s-fs exited with {status} while starting; log:\n{}",
                    self.log()
                );
            }
            // Connectable, and answering HTTP (any status: an unsigned request gets 403).
            let connected = tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok();
            if connected && http::get(&url).await.is_some() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "s3s-fs did not answer on {url} within 20 s; log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kill the server (SIGKILL) and wait for it; the port then refuses connections.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Wait until the port refuses connections (after `stop`).
    pub async fn wait_stopped(&self) {
        let port = self.port;
        wait_for(
            "s3s-fs to stop listening",
            Duration::from_secs(10),
            || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .is_err()
                    .then_some(())
            },
        )
        .await;
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}
