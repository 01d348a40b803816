//! Result tables shared by the benchmark reports: a fixed-width text table for the terminal and
//! a Markdown table for docs/benchmarks.md, from the same header and row cells.

use std::fmt::Write as _;

/// One row: its cells (the first is the row's name, the others right-aligned figures) and,
/// for a row that was not measured, a free-text note after them (failure, timeout, missing tool).
pub struct TableRow {
    pub cells: Vec<String>,
    pub note: Option<String>,
}

impl TableRow {
    pub fn measured(cells: Vec<String>) -> Self {
        TableRow { cells, note: None }
    }

    pub fn noted(cells: Vec<String>, note: &str) -> Self {
        TableRow {
            cells,
            note: Some(first_line_cut(note, 160)),
        }
    }
}

/// The first line of `text`, cut to `max_chars` characters ("..." marks a cut).
pub fn first_line_cut(text: &str, max_chars: usize) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_owned(),
    }
}

/// Fixed-width text: the first column 14 wide and left-aligned, the others at least 12 wide
/// and right-aligned; a note follows the row's cells unpadded.
pub fn text(headers: &[&str], rows: &[TableRow]) -> String {
    let widths: Vec<usize> = headers.iter().map(|h| h.len().max(12)).collect();
    let mut out = String::new();
    for (i, h) in headers.iter().enumerate() {
        let _ = if i == 0 {
            write!(out, "{h:<14}")
        } else {
            write!(out, "  {h:>w$}", w = widths[i])
        };
    }
    out.push('\n');
    for row in rows {
        for (i, cell) in row.cells.iter().enumerate() {
            let width = widths.get(i).copied().unwrap_or(12);
            let _ = if i == 0 {
                write!(out, "{cell:<14}")
            } else {
                write!(out, "  {cell:>width$}")
            };
        }
        if let Some(note) = &row.note {
            let _ = write!(out, "  {note}");
        }
        out.push('\n');
    }
    out
}

/// A Markdown table; a note takes the cell after the row's cells and the rest stay empty.
pub fn markdown(headers: &[&str], rows: &[TableRow]) -> String {
    let mut out = format!("| {} |\n", headers.join(" | "));
    let _ = writeln!(
        out,
        "|---|{}",
        "---:|".repeat(headers.len().saturating_sub(1))
    );
    for row in rows {
        let mut cells = row.cells.clone();
        if let Some(note) = &row.note {
            cells.push(note.replace('|', "/"));
        }
        let blanks = " |".repeat(headers.len().saturating_sub(cells.len()));
        let _ = writeln!(out, "| {} |{blanks}", cells.join(" | "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows() -> Vec<TableRow> {
        vec![
            TableRow::measured(vec!["fast".into(), "1.00".into(), "2.0".into()]),
            TableRow::noted(vec!["slow".into()], "FAILED: it broke\nsecond line"),
        ]
    }

    #[test]
    fn text_aligns_figures_and_appends_notes() {
        let table = text(&["tool", "seconds", "MiB"], &rows());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], "tool                 seconds           MiB");
        assert_eq!(lines[1], "fast                    1.00           2.0");
        assert_eq!(lines[2], "slow            FAILED: it broke");
    }

    #[test]
    fn markdown_fills_every_column() {
        let table = markdown(&["tool", "seconds", "MiB"], &rows());
        assert_eq!(
            table,
            "| tool | seconds | MiB |\n|---|---:|---:|\n| fast | 1.00 | 2.0 |\n\
             | slow | FAILED: it broke | |\n"
        );
    }

    #[test]
    fn long_notes_are_cut() {
        let long = "x".repeat(200);
        let cut = first_line_cut(&long, 160);
        assert_eq!(cut.len(), 163);
        assert!(cut.ends_with("..."));
    }
}
