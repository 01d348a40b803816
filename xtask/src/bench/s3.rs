//! The benchmarks' S3 server: the `s3s-fs` crate served by this program (`cargo xtask
//! s3-server`, see `s3_server`: with `TCP_NODELAY`) on a free loopback port with fixed
//! credentials and one bucket, behind the testkit's nginx TLS proxy (pgBackRest only speaks
//! HTTPS to S3, so every tool goes through the proxy). Both processes are stopped on drop, and
//! get a signal if the benchmark dies first.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;
use pgsteward_testkit::tls_proxy::TlsProxy;

use super::procs;

pub const ACCESS_KEY: &str = "pgsteward-bench-access-key";
pub const SECRET_KEY: &str = "pgsteward-bench-secret-key-0123456789";
pub const BUCKET: &str = "bench";
pub const REGION: &str = "us-east-1";

/// s3s-fs plus the TLS proxy in front of it.
pub struct S3 {
    // Field order is drop order: the proxy goes first.
    pub proxy: TlsProxy,
    server: Child,
    root: PathBuf,
}

impl S3 {
    /// Starts the S3 server on `dir/root` (bucket `BUCKET` created) and the TLS proxy in
    /// `dir/tls`.
    pub fn start(dir: &Path, workspace: &Path) -> Result<Self> {
        let binary = super::s3_server::optimized_binary(workspace)?;
        let root = dir.join("root");
        std::fs::create_dir_all(root.join(BUCKET))
            .with_context(|| format!("mkdir {}", root.display()))?;
        let log = std::fs::File::create(dir.join("s3s-fs.log")).context("creating s3s-fs.log")?;
        let log_err = log.try_clone().context("cloning the log handle")?;
        let port = pgsteward_testkit::free_port();
        let mut command = Command::new(&binary);
        command
            .arg("s3-server")
            .arg(&root)
            .args([&port.to_string(), ACCESS_KEY, SECRET_KEY])
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        let mut server = procs::spawn(&mut command, Some(Signal::SIGKILL))?;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = server.try_wait().context("waiting for s3s-fs")? {
                let log = std::fs::read_to_string(dir.join("s3s-fs.log")).unwrap_or_default();
                bail!("s3s-fs exited with {status}: {}", procs::tail(&log, 2000));
            }
            if Instant::now() >= deadline {
                procs::stop_child(&mut server, Signal::SIGKILL, Duration::from_secs(5));
                bail!("s3s-fs did not listen on {addr} within 20s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let proxy = match TlsProxy::start(&dir.join("tls"), addr) {
            Ok(proxy) => proxy,
            Err(err) => {
                procs::stop_child(&mut server, Signal::SIGKILL, Duration::from_secs(5));
                return Err(err.context("starting the nginx TLS proxy"));
            }
        };
        if let Some(pid) = proxy.pid() {
            // Never mistaken for an orphan by the accounting.
            procs::register_pid(pid);
        }
        Ok(S3 {
            proxy,
            server,
            root,
        })
    }

    /// The directory of `prefix` inside the bucket on s3s-fs's disk.
    pub fn prefix_dir(&self, prefix: &str) -> PathBuf {
        self.root.join(BUCKET).join(prefix)
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        self.proxy.stop();
        procs::stop_child(&mut self.server, Signal::SIGKILL, Duration::from_secs(5));
    }
}

/// The archived segments below `dir`: segment name (the first 24 hex digits of the object's
/// file name, whatever the tool's suffix) to object size.
pub fn archived_segments(dir: &Path) -> BTreeMap<String, u64> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let name = entry.file_name().to_string_lossy().into_owned();
            if meta.is_dir() {
                stack.push(entry.path());
            } else if is_segment_object(&name) {
                found.insert(name[..24].to_owned(), meta.len());
            }
        }
    }
    found
}

fn is_segment_object(name: &str) -> bool {
    name.len() >= 24
        && name.as_bytes()[..24].iter().all(u8::is_ascii_hexdigit)
        && (name.len() == 24 || matches!(name.as_bytes()[24], b'.' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_segment_objects_of_every_tool() {
        assert!(is_segment_object("000000010000000000000001.gz"));
        assert!(is_segment_object(
            "000000010000000000000001-d194af6707c224be98421802378a544379665db9.gz"
        ));
        assert!(is_segment_object("000000010000000000000001"));
        assert!(!is_segment_object("00000002.history.gz"));
        assert!(!is_segment_object("archive.info"));
        assert!(!is_segment_object("000000010000000000000001X"));
    }
}
