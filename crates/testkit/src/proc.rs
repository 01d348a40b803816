//! Process inspection through /proc: parents, children, states, command lines.

use std::path::Path;

/// `(state, ppid)` of a process, None when it does not exist.
pub fn stat(pid: i32) -> Option<(char, i32)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, tail) = text.rsplit_once(')')?;
    let mut fields = tail.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// True while the process exists (zombies included).
pub fn exists(pid: i32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// True when the process exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    matches!(stat(pid), Some((state, _)) if state != 'Z' && state != 'X')
}

/// Direct children of `pid`.
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    out
}

/// The command line of `pid`, arguments joined by spaces.
pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_owned()
        })
        .unwrap_or_default()
}

/// Pids of every live process whose command line contains `needle`.
pub fn pids_matching(needle: &str) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            if let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<i32>().ok())
            {
                if alive(pid) && cmdline(pid).contains(needle) {
                    out.push(pid);
                }
            }
        }
    }
    out
}

/// The host pid of the process that is `ns_pid` inside the PID namespace of `member` (a host
/// pid of any process in that namespace).
pub fn host_pid_in_namespace_of(member: i32, ns_pid: i32) -> Option<i32> {
    let namespace = std::fs::read_link(format!("/proc/{member}/ns/pid")).ok()?;
    let entries = std::fs::read_dir("/proc").ok()?;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{pid}/ns/pid"))
            .ok()
            .as_ref()
            != Some(&namespace)
        {
            continue;
        }
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let inner = status
            .lines()
            .find(|l| l.starts_with("NSpid:"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|p| p.parse::<i32>().ok());
        if inner == Some(ns_pid) {
            return Some(pid);
        }
    }
    None
}

/// `pid` and all its descendants, parents first.
pub fn tree(pid: i32) -> Vec<i32> {
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let kids = children(out[i]);
        out.extend(kids);
        i += 1;
    }
    out
}

/// Send `signal` to `pid` and every descendant — what a host failure does to a postmaster
/// whose children (each in its own process group, postgres calls `setsid` in every child)
/// would otherwise survive it. The tree is frozen with SIGSTOP first so nothing forks or
/// reparents meanwhile; SIGKILL then reaches every member. Returns the pids signalled.
pub fn signal_tree(pid: i32, signal: nix::sys::signal::Signal) -> Vec<i32> {
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    if signal == Signal::SIGCONT {
        let pids = tree(pid);
        for p in &pids {
            let _ = kill(Pid::from_raw(*p), Signal::SIGCONT);
        }
        return pids;
    }
    let mut pids = vec![pid];
    let _ = kill(Pid::from_raw(pid), Signal::SIGSTOP);
    let mut i = 0;
    while i < pids.len() {
        for child in children(pids[i]) {
            let _ = kill(Pid::from_raw(child), Signal::SIGSTOP);
            pids.push(child);
        }
        i += 1;
    }
    if signal != Signal::SIGSTOP {
        for p in &pids {
            let _ = kill(Pid::from_raw(*p), signal);
        }
    }
    pids
}
