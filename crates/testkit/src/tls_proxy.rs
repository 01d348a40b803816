//! A TLS-terminating reverse proxy on loopback: Debian's nginx in front of a plain-HTTP server
//! (the test S3 server), with a throwaway CA and server certificate made by `openssl`. pgBackRest
//! only talks HTTPS to S3, so the interop tests and `cargo xtask bench wal-archive` put every
//! tool (pgsteward, barman-cloud, pgBackRest) behind the same proxy.
//!
//! The certificate is valid for `IP:127.0.0.1` and `DNS:localhost`. Clients that only match DNS
//! names (pgBackRest) must use `localhost` ([`TlsProxy::localhost_endpoint`]); nginx listens on
//! `[::1]` too when IPv6 loopback works, so `localhost` reaches it either way. nginx runs in the
//! foreground in its own process group with every path (pid, logs, temp files) inside the
//! proxy's directory; it is stopped (SIGTERM, then SIGKILL to the group) on drop.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;

use crate::certs::{generate_certificates, Certificates};

/// How long nginx gets to start listening, and to exit after SIGTERM.
const START_TIMEOUT: Duration = Duration::from_secs(10);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Ports tried when the one picked was taken by somebody else in the meantime.
const BIND_ATTEMPTS: usize = 5;

/// A running nginx that terminates TLS on `127.0.0.1:port` (and `[::1]:port`) and forwards
/// every request, unbuffered and unchanged (Host header included, so SigV4 signatures still
/// match), to a plain-HTTP upstream.
#[derive(Debug)]
pub struct TlsProxy {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    ca_file: PathBuf,
}

impl TlsProxy {
    /// Generates the CA and server certificate in `dir` (created, mode 0755, the CA
    /// certificate world-readable so the postgres user's tools can read it), then starts nginx
    /// forwarding to `upstream` and waits until it accepts connections. nginx gets SIGTERM
    /// when the thread that called this exits, so call it from a thread that outlives the proxy
    /// (a test's own thread or a runtime worker, not `spawn_blocking`).
    pub fn start(dir: &Path, upstream: SocketAddr) -> Result<Self> {
        let nginx = nginx_binary()?;
        std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("chmod {}", dir.display()))?;
        let certs = generate_certificates(dir)?;
        let ipv6 = TcpListener::bind("[::1]:0").is_ok();
        let mut last_error = None;
        for _ in 0..BIND_ATTEMPTS {
            let port = free_port_v4_v6(ipv6);
            match start_nginx(&nginx, dir, &certs, upstream, port, ipv6) {
                Ok(child) => {
                    return Ok(TlsProxy {
                        child: Some(child),
                        dir: dir.to_path_buf(),
                        port,
                        ca_file: certs.ca_cert,
                    })
                }
                Err(err) => last_error = Some(err),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow::anyhow!("nginx did not start")))
    }

    /// `https://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// `https://localhost:PORT`, for clients that match only DNS names in certificates.
    pub fn localhost_endpoint(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The PEM file of the CA that signed the proxy's certificate.
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// The directory holding the certificates, the nginx configuration and its logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The nginx pid (master process).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Stops nginx: SIGTERM, then SIGKILL to its process group after a deadline.
    pub fn stop(&mut self) {
        if let Some(child) = self.child.take() {
            stop_child(child);
        }
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The nginx binary: `PGSTEWARD_TEST_NGINX`, else Debian's `/usr/sbin/nginx`.
fn nginx_binary() -> Result<PathBuf> {
    let path = std::env::var_os("PGSTEWARD_TEST_NGINX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/nginx"));
    if !path.is_file() {
        bail!(
            "nginx not found at {} (set PGSTEWARD_TEST_NGINX): apt-get install nginx, or run \
             `cargo xtask prereqs`",
            path.display()
        );
    }
    Ok(path)
}

/// A port free on 127.0.0.1 (and on ::1 when `ipv6`) a moment ago.
fn free_port_v4_v6(ipv6: bool) -> u16 {
    loop {
        let port = crate::free_port();
        if !ipv6 || TcpListener::bind(("::1", port)).is_ok() {
            return port;
        }
    }
}

fn nginx_config(
    dir: &Path,
    certs: &Certificates,
    upstream: SocketAddr,
    port: u16,
    ipv6: bool,
) -> String {
    let d = dir.display();
    // Workers keep root's identity when the master runs as root (the files are root's).
    let user = if nix::unistd::geteuid().is_root() {
        "user root root;\n"
    } else {
        ""
    };
    let listen_v6 = if ipv6 {
        format!("    listen [::1]:{port} ssl;\n")
    } else {
        String::new()
    };
    format!(
        "# Generated by pgsteward-testkit's tls_proxy: TLS on loopback in front of {upstream}.
{user}worker_processes 2;
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;
  upstream backend {{
    server {upstream};
    keepalive 64;
  }}
  server {{
    listen 127.0.0.1:{port} ssl;
{listen_v6}    ssl_certificate {cert};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    keepalive_requests 100000;
    client_max_body_size 0;
    client_body_buffer_size 1m;
    proxy_request_buffering off;
    proxy_buffering off;
    proxy_http_version 1.1;
    proxy_connect_timeout 10s;
    proxy_read_timeout 300s;
    proxy_send_timeout 300s;
    location / {{
      proxy_set_header Host $http_host;
      proxy_set_header Connection \"\";
      proxy_pass http://backend;
    }}
  }}
}}
",
        cert = certs.server_cert.display(),
        key = certs.server_key.display(),
    )
}

fn start_nginx(
    nginx: &Path,
    dir: &Path,
    certs: &Certificates,
    upstream: SocketAddr,
    port: u16,
    ipv6: bool,
) -> Result<Child> {
    std::fs::create_dir_all(dir.join("tmp"))
        .with_context(|| format!("mkdir {}/tmp", dir.display()))?;
    let conf = dir.join("nginx.conf");
    std::fs::write(&conf, nginx_config(dir, certs, upstream, port, ipv6))
        .with_context(|| format!("writing {}", conf.display()))?;
    let error_log = dir.join("error.log");
    let stderr = std::fs::File::create(dir.join("nginx.stderr"))
        .with_context(|| format!("creating {}/nginx.stderr", dir.display()))?;
    let mut prefix = dir.as_os_str().to_owned();
    prefix.push("/");
    let mut command = Command::new(nginx);
    // SAFETY: the closure only calls prctl, which is async-signal-safe. nginx gets SIGTERM
    // (fast shutdown) if the thread that started it dies without dropping the proxy.
    unsafe {
        command.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
    let mut child = command
        .arg("-p")
        .arg(&prefix)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(&error_log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", nginx.display()))?;
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().context("waiting for nginx")? {
            let log = std::fs::read_to_string(&error_log).unwrap_or_default();
            let stderr = std::fs::read_to_string(dir.join("nginx.stderr")).unwrap_or_default();
            bail!(
                "nginx exited with {status} before listening on port {port}: {}{}",
                stderr.trim(),
                log.trim()
            );
        }
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(child);
        }
        if Instant::now() >= deadline {
            stop_child(child);
            bail!("nginx did not listen on 127.0.0.1:{port} within {START_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGTERM (fast shutdown), wait up to STOP_TIMEOUT, then SIGKILL the whole process group.
fn stop_child(mut child: Child) {
    let Ok(pid) = i32::try_from(child.id()) else {
        return;
    };
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            // Workers exit with the master; make sure no straggler keeps the port.
            let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_forwards_unbuffered_with_the_host_header() {
        let certs = Certificates {
            ca_cert: PathBuf::from("/d/ca.crt"),
            ca_key: PathBuf::from("/d/ca.key"),
            server_cert: PathBuf::from("/d/server.crt"),
            server_key: PathBuf::from("/d/server.key"),
        };
        let upstream = SocketAddr::from(([127, 0, 0, 1], 9000));
        let conf = nginx_config(Path::new("/d"), &certs, upstream, 4443, true);
        for needle in [
            "listen 127.0.0.1:4443 ssl;",
            "listen [::1]:4443 ssl;",
            "server 127.0.0.1:9000;",
            "client_max_body_size 0;",
            "proxy_request_buffering off;",
            "proxy_set_header Host $http_host;",
            "ssl_certificate /d/server.crt;",
            "pid /d/nginx.pid;",
        ] {
            assert!(conf.contains(needle), "{needle} missing from\n{conf}");
        }
        let conf = nginx_config(Path::new("/d"), &certs, upstream, 4443, false);
        assert!(!conf.contains("[::1]"));
    }

    /// An HTTP/1.1 server answering every request with `<Host header> <body length>`.
    fn echo_upstream() -> SocketAddr {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("local_addr: {e}"));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                // One thread per connection: nginx keeps upstream connections alive.
                std::thread::spawn(move || serve(stream));
            }
        });
        fn serve(stream: std::net::TcpStream) {
            {
                let mut reader = BufReader::new(stream);
                loop {
                    let (mut host, mut length) = (String::new(), 0usize);
                    let mut line = String::new();
                    let mut got_request = false;
                    while reader.read_line(&mut line).unwrap_or(0) > 0 {
                        got_request = true;
                        let trimmed = line.trim_end();
                        if trimmed.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = trimmed.split_once(':') {
                            match name.to_ascii_lowercase().as_str() {
                                "host" => host = value.trim().to_owned(),
                                "content-length" => length = value.trim().parse().unwrap_or(0),
                                _ => {}
                            }
                        }
                        line.clear();
                    }
                    if !got_request {
                        break;
                    }
                    let mut body = vec![0u8; length];
                    if reader.read_exact(&mut body).is_err() {
                        break;
                    }
                    let answer = format!("{host} {length}");
                    let reply = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if reader.get_mut().write_all(reply.as_bytes()).is_err() {
                        break;
                    }
                }
            }
        }
        addr
    }

    fn have(program: &str) -> bool {
        Command::new(program)
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }

    #[test]
    fn proxies_https_with_the_generated_ca_for_ip_and_localhost() {
        assert!(
            Path::new("/usr/sbin/nginx").is_file() && have("curl") && have("openssl"),
            "nginx, curl and openssl are needed: run `cargo xtask prereqs`"
        );
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let upstream = echo_upstream();
        let proxy = TlsProxy::start(&dir.path().join("tls"), upstream)
            .unwrap_or_else(|e| panic!("starting the proxy: {e:#}"));
        let port = proxy.port();
        let body = dir.path().join("body");
        std::fs::write(&body, vec![7u8; 17 << 20]).unwrap_or_else(|e| panic!("{e}"));
        for (endpoint, host) in [
            (proxy.endpoint(), format!("127.0.0.1:{port}")),
            (proxy.localhost_endpoint(), format!("localhost:{port}")),
        ] {
            let output = Command::new("curl")
                .args(["-sS", "--fail", "--max-time", "30", "--cacert"])
                .arg(proxy.ca_file())
                .arg("-T")
                .arg(&body)
                .arg(format!("{endpoint}/bucket/key"))
                .output()
                .unwrap_or_else(|e| panic!("curl: {e}"));
            assert!(
                output.status.success(),
                "curl {endpoint}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            assert_eq!(
                String::from_utf8_lossy(&output.stdout),
                format!("{host} {}", 17 << 20),
                "the proxy must pass the Host header and the whole body"
            );
        }
        let pid = proxy.pid().unwrap_or_default();
        drop(proxy);
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| s.contains(") Z"))
                    .unwrap_or(true),
            "nginx {pid} still running after drop"
        );
    }
}
