//! `pgsteward drill`: one restore drill of the configured archive, from the command line. The
//! report is printed as JSON; the exit code is 0 when the drill succeeded.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::config::{self, ConfigSources};
use crate::pgbin::PgBinaries;
use crate::supervisor::reaper::Reaper;

/// `pgsteward drill` flags.
#[derive(Debug, Args)]
pub struct DrillArgs {
    /// The instance's YAML configuration (archive, binaries, superuser, archive.drill).
    #[arg(long, env = "PGSTEWARD_CONFIG")]
    pub config: PathBuf,
    /// When started as root: the user to become first (postgres refuses root).
    #[arg(long, env = "PGSTEWARD_USER")]
    pub user: Option<String>,
    /// Directory below which the scratch data directory is made.
    #[arg(long)]
    pub scratch_dir: Option<PathBuf>,
    /// `--set PATH=VALUE` and the other configuration flags, as for `run`.
    #[command(flatten)]
    pub sources: crate::cli::ConfigArgs,
}

/// Run `pgsteward drill`; returns the exit code.
pub fn run(args: DrillArgs) -> i32 {
    let prepared = (|| -> Result<_> {
        if nix::unistd::geteuid().is_root() {
            let Some(name) = &args.user else {
                bail!("running as root requires --user NAME (postgres refuses root)");
            };
            crate::privileges::drop_to(&crate::privileges::lookup(name)?)?;
        }
        let sources =
            ConfigSources::from_process(Some(args.config.clone()), args.sources.overrides()?);
        let mut config = config::load(&sources)?;
        if let Some(dir) = &args.scratch_dir {
            config.archive.drill.scratch_dir = Some(dir.clone());
        }
        crate::logs::init(&config.log.level)?;
        let bins = PgBinaries::locate(config.bin_dir.as_deref())?;
        let executable = std::env::current_exe().context("locating the pgsteward executable")?;
        Ok((config, bins, executable))
    })();
    let (config, bins, executable) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            eprintln!("pgsteward drill: error: {e:#}");
            return 1;
        }
    };
    crate::cli::block_on("drill", crate::cli::CommandRuntime::TwoWorkers, async {
        let report = async {
            let reaper = Reaper::start()?;
            anyhow::Ok(super::run(&reaper, &bins, &config, &executable).await)
        }
        .await;
        print_report(report)
    })
}

/// Print a drill's report; the exit code says whether it passed.
fn print_report(report: anyhow::Result<super::DrillReport>) -> i32 {
    match report {
        Ok(report) => {
            match serde_json::to_string_pretty(&report) {
                Ok(json) => println!("{json}"),
                Err(e) => eprintln!("pgsteward drill: cannot print the report: {e}"),
            }
            if report.success {
                0
            } else {
                eprintln!(
                    "pgsteward drill: FAILED: {}",
                    report.error.as_deref().unwrap_or("unknown error")
                );
                1
            }
        }
        Err(e) => {
            eprintln!("pgsteward drill: error: {e:#}");
            1
        }
    }
}
