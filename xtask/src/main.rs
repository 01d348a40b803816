//! `cargo xtask`: the project's automation entry point. Owns argument parsing, the usage text
//! and the dispatch to the subcommands (`codegen`, `prereqs`, `ci`, `bench`, `demo`), which live in
//! their own modules. Every path is resolved from the workspace root, never the current
//! directory.

mod bench;
mod ci;
mod codegen;
mod demo;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};

const USAGE: &str = "\
Usage: cargo xtask <COMMAND>

Commands:
  codegen [--check]  Write docs/api/openapi.yaml from the HTTP route tables; with --check,
                     compare instead and fail if the file is out of date.
  prereqs            Install or verify the CI prerequisites (runs `bash .ci/prereqs`).
  ci                 Run the whole CI pipeline: prereqs, fmt, clippy, codegen --check, tests.
  bench <NAME>       Run a benchmark (as root). Names:
                       wal-archive  WAL archive/restore throughput of pgsteward, barman-cloud
                                    and pgBackRest on one real backlog and one S3 server;
                                    writes docs/benchmarks.md.
                       backup       Base backup and restore of pgsteward (its manager),
                                    pgBackRest and barman-cloud on one pgbench database
                                    (PGSTEWARD_BENCH_SCALE, default 50); writes
                                    docs/benchmarks.md.
                       failover     RTO and lost acknowledged commits of three instances and
                                    the coordinator under kill -9, SIGSTOP and switchover
                                    (--count N runs per fault, default 10; --pg 15|18);
                                    writes docs/benchmarks.md.
  demo               Start three local instances, the coordinator and a file:// archive (as
                     root; postgres runs as the postgres user), print how to connect and how
                     to trigger a failover or switchover, run until Ctrl-C, clean up.
  s3-server ROOT PORT ACCESS_KEY SECRET_KEY
                     Serve ROOT as S3 on 127.0.0.1:PORT (the s3s-fs crate with TCP_NODELAY;
                     the benchmarks start it), until killed.
  help               Print this text.
";

/// Exit code for a command line that could not be understood.
const EXIT_USAGE: u8 = 2;

fn main() -> ExitCode {
    match run(std::env::args_os().skip(1).collect()) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("xtask: error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(raw_args: Vec<OsString>) -> Result<ExitCode> {
    let args = raw_args
        .into_iter()
        .map(|arg| {
            arg.into_string()
                .map_err(|arg| anyhow::anyhow!("argument {arg:?} is not valid UTF-8"))
        })
        .collect::<Result<Vec<String>>>()?;
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let root = workspace_root()?;
    match args.as_slice() {
        [] | ["help" | "-h" | "--help"] => {
            print!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        ["codegen"] => {
            codegen::write(&root)?;
            Ok(ExitCode::SUCCESS)
        }
        ["codegen", "--check"] => {
            codegen::check(&root)?;
            Ok(ExitCode::SUCCESS)
        }
        ["prereqs"] => {
            ci::prereqs(&root)?;
            Ok(ExitCode::SUCCESS)
        }
        ["ci"] => ci::ci(&root),
        ["bench", "failover", rest @ ..] => bench::failover::run(&root, rest),
        ["demo"] => demo::run(&root),
        ["s3-server", dir, port, access_key, secret_key] => {
            bench::s3_server::run(dir, port, access_key, secret_key)?;
            Ok(ExitCode::SUCCESS)
        }
        ["bench", name] => match bench::run(&root, name) {
            Some(result) => result,
            None => Ok(usage_error(&format!(
                "unknown benchmark `{name}` (known: {})",
                bench::NAMES.join(", ")
            ))),
        },
        ["bench"] => Ok(usage_error("`bench` needs a benchmark NAME")),
        ["codegen", ..] => Ok(usage_error("`codegen` takes no argument but `--check`")),
        [command, ..] => Ok(usage_error(&format!(
            "unknown command or arguments: `{}`",
            std::iter::once(*command)
                .chain(args.iter().skip(1).copied())
                .collect::<Vec<_>>()
                .join(" ")
        ))),
    }
}

fn usage_error(message: &str) -> ExitCode {
    eprintln!("xtask: {message}\n\n{USAGE}");
    ExitCode::from(EXIT_USAGE)
}

/// The workspace root: the parent of this crate's manifest directory.
fn workspace_root() -> Result<PathBuf> {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .with_context(|| format!("{} has no parent directory", manifest_dir.display()))?;
    if !root.join("Cargo.toml").is_file() {
        bail!("no Cargo.toml in the workspace root {}", root.display());
    }
    Ok(root.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workspace_root_holds_the_workspace_manifest() {
        let root = workspace_root();
        assert!(root.is_ok(), "{root:?}");
        if let Ok(root) = root {
            assert!(root.join("xtask").join("Cargo.toml").is_file());
        }
    }
}
