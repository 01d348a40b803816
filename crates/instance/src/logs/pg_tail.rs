//! Follows postgres's `jsonlog` files (named in `<pgdata>/current_logfiles`) and re-emits
//! every record. Files are read, never written, so postgres never blocks on the manager. The
//! read position is kept in `<pgdata>/log/.pgsteward-position` so that a restarted manager
//! neither repeats nor skips lines; a file is deleted once read to its end and rotated away.

use std::fs::{self, File};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::render::LOG_DIRECTORY;

const POSITION_FILE: &str = ".pgsteward-position";

/// Tail state: which file, how far.
#[derive(Debug)]
struct Position {
    file: Option<PathBuf>,
    offset: u64,
    partial: Vec<u8>,
}

/// Follow the logs of `pgdata` until the process exits.
pub fn spawn(pgdata: PathBuf) {
    tokio::spawn(async move {
        let mut position = load_position(&pgdata);
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let dir = pgdata.clone();
            let moved = std::mem::replace(
                &mut position,
                Position {
                    file: None,
                    offset: 0,
                    partial: Vec::new(),
                },
            );
            position = match tokio::task::spawn_blocking(move || poll(&dir, moved)).await {
                Ok(p) => p,
                Err(_) => Position {
                    file: None,
                    offset: 0,
                    partial: Vec::new(),
                },
            };
        }
    });
}

fn current_logfile(pgdata: &Path) -> Option<PathBuf> {
    let text = fs::read_to_string(pgdata.join("current_logfiles")).ok()?;
    text.lines().find_map(|line| {
        let (kind, path) = line.split_once(' ')?;
        (kind == "jsonlog").then(|| pgdata.join(path.trim()))
    })
}

fn poll(pgdata: &Path, mut position: Position) -> Position {
    let Some(current) = current_logfile(pgdata) else {
        return position;
    };
    if position.file.as_ref() != Some(&current) {
        if let Some(old) = position.file.take() {
            // Drain what the old file got before the rotation, then remove it.
            while read_new(&old, &mut position) {}
            flush_partial(&mut position);
            let _ = fs::remove_file(&old);
        }
        position = Position {
            file: Some(current.clone()),
            offset: 0,
            partial: Vec::new(),
        };
    }
    let mut moved = false;
    while read_new(&current, &mut position) {
        moved = true;
    }
    if moved {
        save_position(pgdata, &position);
    }
    position
}

/// Read and emit complete lines past the offset; returns true when the offset moved.
fn read_new(path: &Path, position: &mut Position) -> bool {
    let Ok(mut file) = File::open(path) else {
        return false;
    };
    let Ok(len) = file.metadata().map(|m| m.len()) else {
        return false;
    };
    if len < position.offset {
        position.offset = 0; // truncated or replaced
        position.partial.clear();
    }
    if len == position.offset || file.seek(SeekFrom::Start(position.offset)).is_err() {
        return false;
    }
    let mut buffer = Vec::new();
    let Ok(read) = file.take(8 * 1024 * 1024).read_to_end(&mut buffer) else {
        return false;
    };
    position.offset += read as u64;
    position.partial.extend_from_slice(&buffer);
    while let Some(newline) = position.partial.iter().position(|b| *b == b'\n') {
        let line: Vec<u8> = position.partial.drain(..=newline).collect();
        emit(&line[..line.len() - 1]);
    }
    true
}

fn flush_partial(position: &mut Position) {
    if !position.partial.is_empty() {
        let line = std::mem::take(&mut position.partial);
        emit(&line);
    }
}

fn emit(line: &[u8]) {
    if line.is_empty() {
        return;
    }
    match serde_json::from_slice::<serde_json::Value>(line) {
        Ok(record) => super::emit_postgres_record(record),
        Err(_) => super::emit_postgres_stderr(&String::from_utf8_lossy(line)),
    }
}

fn position_path(pgdata: &Path) -> PathBuf {
    pgdata.join(LOG_DIRECTORY).join(POSITION_FILE)
}

fn load_position(pgdata: &Path) -> Position {
    let parsed = fs::read_to_string(position_path(pgdata))
        .ok()
        .and_then(|text| {
            let (offset, file) = text.trim_end().split_once(' ')?;
            Some((PathBuf::from(file), offset.parse::<u64>().ok()?))
        });
    match parsed {
        Some((file, offset)) if file.exists() => Position {
            file: Some(file),
            offset,
            partial: Vec::new(),
        },
        _ => Position {
            file: None,
            offset: 0,
            partial: Vec::new(),
        },
    }
}

fn save_position(pgdata: &Path, position: &Position) {
    // Lines not yet complete are re-read next time: save the offset of the last full line.
    let Some(file) = &position.file else { return };
    let complete = position.offset - position.partial.len() as u64;
    let _ = fs::write(
        position_path(pgdata),
        format!("{complete} {}\n", file.display()),
    );
}
