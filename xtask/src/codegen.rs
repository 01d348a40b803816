//! `cargo xtask codegen [--check]`: keeps `docs/api/openapi.yaml` equal to
//! `pgsteward::http::openapi::spec_yaml()`. Without `--check` it writes the file; with it, it
//! compares and fails on drift.

use std::path::Path;

use anyhow::{bail, Context, Result};

/// Where the generated spec lives, relative to the workspace root.
pub const SPEC_PATH: &str = "docs/api/openapi.yaml";

/// Writes the spec (only when it changed, so the file's mtime stays put otherwise).
pub fn write(root: &Path) -> Result<()> {
    let path = root.join(SPEC_PATH);
    let wanted = pgsteward::http::openapi::spec_yaml();
    if read_existing(&path)?.as_deref() == Some(wanted.as_str()) {
        println!("{SPEC_PATH} is up to date");
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(&path, wanted).with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {SPEC_PATH}");
    Ok(())
}

/// Fails with a clear message when the spec on disk differs from the generated one.
pub fn check(root: &Path) -> Result<()> {
    let path = root.join(SPEC_PATH);
    let wanted = pgsteward::http::openapi::spec_yaml();
    match read_existing(&path)? {
        Some(actual) if actual == wanted => {
            println!("{SPEC_PATH} is up to date");
            Ok(())
        }
        Some(actual) => bail!(
            "{SPEC_PATH} is out of date: run `cargo xtask codegen` ({})",
            first_difference(&actual, &wanted)
        ),
        None => {
            bail!("{SPEC_PATH} is out of date: run `cargo xtask codegen` (the file is missing)")
        }
    }
}

fn read_existing(path: &Path) -> Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// Describes where two texts first differ, by 1-based line number.
fn first_difference(actual: &str, wanted: &str) -> String {
    let mut actual_lines = actual.lines();
    let mut wanted_lines = wanted.lines();
    let mut line = 1usize;
    loop {
        match (actual_lines.next(), wanted_lines.next()) {
            (Some(a), Some(w)) if a == w => line += 1,
            (Some(a), Some(w)) => {
                return format!("first difference at line {line}: file has {a:?}, generated {w:?}")
            }
            (Some(_), None) => return format!("the file has extra lines from line {line}"),
            (None, Some(_)) => return format!("the file ends early, at line {line}"),
            (None, None) => {
                return "the files differ only in line endings or the final newline".to_owned()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_difference_names_the_line() {
        assert_eq!(
            first_difference("a\nb\nc\n", "a\nx\nc\n"),
            "first difference at line 2: file has \"b\", generated \"x\""
        );
        assert_eq!(
            first_difference("a\n", "a\nb\n"),
            "the file ends early, at line 2"
        );
        assert_eq!(
            first_difference("a\nb\n", "a\n"),
            "the file has extra lines from line 2"
        );
        assert_eq!(
            first_difference("a\r\n", "a\n"),
            "the files differ only in line endings or the final newline"
        );
    }
}
