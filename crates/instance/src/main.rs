//! The `pgsteward` binary: parses the command line and dispatches to the library.

use clap::Parser;

fn main() {
    let cli = pgsteward::cli::Cli::parse();
    let code = pgsteward::cli::dispatch(cli);
    std::process::exit(code);
}
