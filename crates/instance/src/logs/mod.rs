//! One JSON log stream on stdout: the manager's own `tracing` records and postgres's log
//! lines (from its stderr pipe and its `jsonlog` files), one JSON object per line.

pub mod pg_tail;

use std::io::Write;

use anyhow::Result;
use serde_json::{json, Value};
use tracing_subscriber::EnvFilter;

/// Install the JSON `tracing` subscriber writing to stdout. `filter` is a `tracing` directive.
pub fn init(filter: &str) -> Result<()> {
    let filter = EnvFilter::try_new(filter)
        .map_err(|e| anyhow::anyhow!("invalid log level filter {filter:?}: {e}"))?;
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(true)
        .with_env_filter(filter)
        .with_writer(std::io::stdout)
        .try_init()
        .map_err(|e| anyhow::anyhow!("installing the log subscriber: {e}"))?;
    Ok(())
}

/// Map a postgres `error_severity` to a tracing-style level.
fn level_of(severity: &str) -> &'static str {
    match severity {
        "DEBUG" | "DEBUG1" | "DEBUG2" | "DEBUG3" | "DEBUG4" | "DEBUG5" => "DEBUG",
        "WARNING" => "WARN",
        "ERROR" | "FATAL" | "PANIC" => "ERROR",
        _ => "INFO",
    }
}

fn now_rfc3339() -> String {
    humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string()
}

/// Re-emit one `jsonlog` record of postgres.
pub fn emit_postgres_record(record: Value) {
    let severity = record
        .get("error_severity")
        .and_then(Value::as_str)
        .unwrap_or("LOG");
    let line = json!({
        "timestamp": now_rfc3339(),
        "level": level_of(severity),
        "target": "postgres",
        "message": record.get("message").cloned().unwrap_or(Value::Null),
        "record": record,
    });
    write_line(&line);
}

/// Re-emit one plain text line postgres wrote to its stderr (before its logging collector
/// starts, or when it cannot start at all).
pub fn emit_postgres_stderr(text: &str) {
    let line = json!({
        "timestamp": now_rfc3339(),
        "level": if text.contains("FATAL") || text.contains("PANIC") || text.contains("ERROR") { "ERROR" } else { "INFO" },
        "target": "postgres",
        "source": "stderr",
        "message": text,
    });
    write_line(&line);
}

fn write_line(value: &Value) {
    let mut text = value.to_string();
    text.push('\n');
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let _ = lock.write_all(text.as_bytes());
    let _ = lock.flush();
}

/// Read a child's pipe line by line on a blocking thread and re-emit each line.
pub fn forward_pipe<R: std::io::Read + Send + 'static>(pipe: R) {
    std::thread::spawn(move || {
        use std::io::BufRead;
        let reader = std::io::BufReader::new(pipe);
        for line in reader.split(b'\n') {
            match line {
                Ok(bytes) => {
                    let text = String::from_utf8_lossy(&bytes);
                    let text = text.trim_end();
                    if !text.is_empty() {
                        emit_postgres_stderr(text);
                    }
                }
                Err(_) => break,
            }
        }
    });
}
