//! `cargo xtask prereqs` and `cargo xtask ci`: the CI pipeline. `ci` runs, in order and
//! stopping at the first failure, `bash .ci/prereqs`, `cargo fmt --check`, `cargo clippy`,
//! the codegen drift check (in-process) and `cargo test`, timing each step. The PostgreSQL 18
//! bin directory for the tests comes from `PGSTEWARD_TEST_PG18_BIN` when set, else from the
//! `PGSTEWARD_TEST_PG18_BIN=...` line that `.ci/prereqs` prints on stdout.

use std::ffi::OsString;
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::bench::procs::describe;
use crate::codegen;

/// The variable through which the tests find the PostgreSQL 18 binaries.
pub const PG18_BIN_VAR: &str = "PGSTEWARD_TEST_PG18_BIN";

const PREREQS_SCRIPT: &str = ".ci/prereqs";

/// `cargo xtask prereqs`: runs the script with the terminal as its stdout and stderr.
pub fn prereqs(root: &Path) -> Result<()> {
    let mut command = Command::new("bash");
    command.arg(PREREQS_SCRIPT).current_dir(root);
    run_status(&mut command)
}

/// `cargo xtask ci`: every step in order; the first failure ends the run with exit code 1.
pub fn ci(root: &Path) -> Result<ExitCode> {
    const TOTAL: usize = 5;
    let started = Instant::now();
    let result = (|| -> Result<()> {
        let pg18_bin = step(1, TOTAL, "prereqs", "bash .ci/prereqs", || {
            pg18_bin_for_tests(root)
        })?;
        let fmt = ["fmt", "--all", "--check"];
        step(2, TOTAL, "fmt", &shown("cargo", &fmt), || {
            run_status(cargo(root).args(fmt))
        })?;
        let clippy = [
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ];
        step(3, TOTAL, "clippy", &shown("cargo", &clippy), || {
            run_status(cargo(root).args(clippy))
        })?;
        step(
            4,
            TOTAL,
            "codegen",
            "cargo xtask codegen --check (in-process)",
            || codegen::check(root),
        )?;
        let test = ["test", "--workspace", "--", "--test-threads=2"];
        let what = format!(
            "{} with {PG18_BIN_VAR}={}",
            shown("cargo", &test),
            Path::new(&pg18_bin).display()
        );
        step(5, TOTAL, "test", &what, || {
            run_status(cargo(root).args(test).env(PG18_BIN_VAR, &pg18_bin))
        })
    })();
    let total = format_elapsed(started.elapsed());
    // Killed postmasters leave SysV segments, and kernel.shmmni caps them (4096): a run that
    // leaks is shown here, before the table fills over many runs.
    if let Some((used, limit)) = pgsteward_testkit::sysv::usage() {
        let leaked = pgsteward_testkit::sysv::left_behind().len();
        println!(
            "==> ci: SysV shared memory segments in use: {used} of {limit}; {leaked} left by postmasters that are gone"
        );
    }
    match result {
        Ok(()) => {
            println!("==> ci: all {TOTAL} steps passed in {total}");
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("==> ci: {err:#} (after {total} in all)");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Runs one numbered step: a header line, the step, then its elapsed time and outcome. A
/// failure is returned as "step N/T NAME failed after ...".
fn step<T>(
    n: usize,
    total: usize,
    name: &str,
    what: &str,
    body: impl FnOnce() -> Result<T>,
) -> Result<T> {
    println!("==> step {n}/{total} {name}: {what}");
    let started = Instant::now();
    let result = body();
    let elapsed = format_elapsed(started.elapsed());
    match result {
        Ok(value) => {
            println!("==> step {n}/{total} {name} ok ({elapsed})");
            Ok(value)
        }
        Err(err) => Err(err.context(format!("step {n}/{total} {name} failed after {elapsed}"))),
    }
}

/// Runs `.ci/prereqs` (its stderr to the terminal, its stdout captured and echoed) and returns
/// the PostgreSQL 18 bin directory: `PGSTEWARD_TEST_PG18_BIN` if already set, else the one the
/// script printed.
fn pg18_bin_for_tests(root: &Path) -> Result<OsString> {
    let output = Command::new("bash")
        .arg(PREREQS_SCRIPT)
        .current_dir(root)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run `bash {PREREQS_SCRIPT}`"))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    print!("{stdout}");
    if !output.status.success() {
        bail!("`bash {PREREQS_SCRIPT}` exited with {}", output.status);
    }
    if let Some(value) = std::env::var_os(PG18_BIN_VAR).filter(|v| !v.is_empty()) {
        println!(
            "{PG18_BIN_VAR} is already set; the tests use {}",
            Path::new(&value).display()
        );
        return Ok(value);
    }
    match parse_pg18_bin(&stdout) {
        Some(dir) => {
            println!("the tests use {PG18_BIN_VAR}={dir}");
            Ok(dir.into())
        }
        None => bail!("`bash {PREREQS_SCRIPT}` printed no `{PG18_BIN_VAR}=...` line on stdout"),
    }
}

/// The value of the last `PGSTEWARD_TEST_PG18_BIN=...` line with a non-empty value.
fn parse_pg18_bin(stdout: &str) -> Option<&str> {
    stdout
        .lines()
        .filter_map(|line| line.trim().strip_prefix(PG18_BIN_VAR)?.strip_prefix('='))
        .map(str::trim)
        .rfind(|value| !value.is_empty())
}

/// A `cargo` command in the workspace root: the cargo that runs us (`$CARGO`) if known.
fn cargo(root: &Path) -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
    let mut command = Command::new(program);
    command.current_dir(root);
    command
}

/// Runs a command with inherited stdout and stderr (stdin closed); fails unless it exits 0.
fn run_status(command: &mut Command) -> Result<()> {
    let shown = describe(command);
    let status = command
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !status.success() {
        bail!("`{shown}` exited with {status}");
    }
    Ok(())
}

fn shown(program: &str, args: &[&str]) -> String {
    std::iter::once(program)
        .chain(args.iter().copied())
        .collect::<Vec<_>>()
        .join(" ")
}

fn format_elapsed(elapsed: Duration) -> String {
    let secs = elapsed.as_secs_f64();
    if secs < 60.0 {
        format!("{secs:.1}s")
    } else {
        format!("{}m{:04.1}s", elapsed.as_secs() / 60, secs % 60.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_last_pg18_line() {
        let stdout = "noise\nPGSTEWARD_TEST_PG18_BIN=/a/bin\nPGSTEWARD_TEST_PG18_BIN=/opt/pgsteward-ci/pg18/bin\n";
        assert_eq!(parse_pg18_bin(stdout), Some("/opt/pgsteward-ci/pg18/bin"));
    }

    #[test]
    fn ignores_empty_and_foreign_lines() {
        assert_eq!(parse_pg18_bin(""), None);
        assert_eq!(parse_pg18_bin("PGSTEWARD_TEST_PG18_BIN=\n"), None);
        assert_eq!(parse_pg18_bin("PGSTEWARD_TEST_PG18_BINX=/x\n"), None);
        assert_eq!(
            parse_pg18_bin("PGSTEWARD_TEST_PG18_BIN=/x\nPGSTEWARD_TEST_PG18_BIN=\n"),
            Some("/x")
        );
    }

    #[test]
    fn formats_elapsed_times() {
        assert_eq!(format_elapsed(Duration::from_millis(1234)), "1.2s");
        assert_eq!(format_elapsed(Duration::from_millis(125_500)), "2m05.5s");
    }

    #[test]
    fn describes_commands_without_the_program_path() {
        let mut command = Command::new("/usr/bin/cargo");
        command.args(["fmt", "--check"]);
        assert_eq!(describe(&command), "cargo fmt --check");
    }
}
