//! `cargo xtask s3-server ROOT PORT ACCESS_KEY SECRET_KEY`: the benchmarks' S3 server, the
//! `s3s-fs` crate (the same file-system S3 implementation as the `s3s-fs` binary the tests use)
//! served on 127.0.0.1:PORT with SigV4 authentication, path-style addressing, and
//! `TCP_NODELAY` on every connection. The `s3s-fs` 0.14.1 binary leaves Nagle's algorithm on,
//! so the last small piece of a response can wait for the client's delayed ACK (up to 40 ms
//! on Linux): GETs of a few hundred KB measured 2 ms or 43 ms at random over loopback, 3-5 ms
//! with `TCP_NODELAY`. Production S3 servers (AWS; MinIO and SeaweedFS, through Go's default)
//! do not add that delay, so a benchmark should not either. The process runs until killed.
//! It runs from an optimized build of this program (`optimized_binary`), as the installed
//! `s3s-fs` binary is, so its hashing and copying cost what a release build costs.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::auth::SimpleAuth;
use s3s::service::S3ServiceBuilder;
use tokio::net::TcpListener;

/// The server, for the benchmarks' reports.
pub const DESCRIPTION: &str = "s3s-fs 0.14.1 (the crate, served with TCP_NODELAY)";

/// This program when it is an optimized build, else `target/release/xtask`, built once per
/// benchmark run (`cargo xtask` builds with the dev profile, which leaves dependencies such as
/// s3s, md-5 and hyper unoptimized).
pub fn optimized_binary(workspace: &Path) -> Result<PathBuf> {
    if !cfg!(debug_assertions) {
        return std::env::current_exe().context("locating this program");
    }
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        eprintln!("bench: building the S3 server (cargo build --release -p xtask)");
        super::procs::cargo_build_release(workspace, &["-p", "xtask"])
            .map(|()| workspace.join("target/release/xtask"))
    });
    built.clone().map_err(anyhow::Error::msg)
}

/// Serve `root` until the process is killed.
pub fn run(root: &str, port: &str, access_key: &str, secret_key: &str) -> Result<()> {
    let root = PathBuf::from(root);
    let port: u16 = port
        .parse()
        .with_context(|| format!("port {port:?} is not a number"))?;
    let filesystem = s3s_fs::FileSystem::new(&root)
        .map_err(|e| anyhow::anyhow!("serving {}: {e:?}", root.display()))?;
    let service = {
        let mut builder = S3ServiceBuilder::new(filesystem);
        builder.set_auth(SimpleAuth::from_single(access_key, secret_key));
        builder.build()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port))
            .await
            .with_context(|| format!("binding 127.0.0.1:{port}"))?;
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let socket = match listener.accept().await {
                Ok((socket, _)) => socket,
                Err(e) => {
                    eprintln!("s3-server: accepting a connection: {e}");
                    continue;
                }
            };
            if let Err(e) = socket.set_nodelay(true) {
                eprintln!("s3-server: TCP_NODELAY: {e}");
            }
            let connection = http
                .serve_connection(TokioIo::new(socket), service.clone())
                .into_owned();
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    eprintln!("s3-server: connection: {e}");
                }
            });
        }
    })
}
