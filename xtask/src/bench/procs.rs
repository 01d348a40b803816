//! Process plumbing for the benchmarks: spawning commands as the postgres user with a clean
//! environment, waiting with deadlines, and accounting for the CPU time and peak RSS of the
//! processes a tool runs — including the ones it detaches (pgBackRest's async process), which
//! the benchmark collects by being a child subreaper and reaping them itself with `wait4`.
//!
//! Accounting model: a process's `wait4` rusage covers it and every descendant it waited for.
//! Commands postgres runs (archive_command) are waited for by the archiver, so their CPU shows
//! in the archiver's `cutime + cstime` (`/proc/<pid>/stat`); detached processes are re-parented
//! to this process (subreaper) and their rusage comes from our own `wait4`. Peak RSS of
//! short-lived commands is sampled (`VmHWM`, every 5 ms) since `/proc` has no per-child maximum.

pub use pgsteward_testkit::proc::{children, cmdline};
use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, User};

/// Pids this process spawned on purpose (servers, psql, the restore commands): everything else
/// that shows up as our child is an orphan adopted through the subreaper flag.
static SPAWNED: Mutex<Option<HashSet<i32>>> = Mutex::new(None);

/// Marks a pid as ours (spawned on purpose), so the accounting never treats it as an orphan.
pub fn register_pid(pid: u32) {
    if let (Ok(mut set), Ok(pid)) = (SPAWNED.lock(), i32::try_from(pid)) {
        set.get_or_insert_with(HashSet::new).insert(pid);
    }
}

fn is_registered(pid: i32) -> bool {
    SPAWNED
        .lock()
        .map(|set| set.as_ref().is_some_and(|s| s.contains(&pid)))
        .unwrap_or(false)
}

/// Makes this process the subreaper of its descendants, so detached grandchildren become our
/// children when their parent exits (instead of init's) and we can collect their rusage.
pub fn become_subreaper() -> Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument and touches no memory.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc != 0 {
        bail!(
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// The postgres OS user.
pub fn postgres_user() -> Result<User> {
    User::from_name("postgres")
        .context("looking up the postgres user")?
        .context("the postgres OS user does not exist: apt-get install postgresql-15 (or run `cargo xtask prereqs`)")
}

/// A command run as the postgres user with only the given environment (plus PATH, LANG and
/// HOME), so the caller's AWS_*/SSL_* variables never leak into a tool.
pub fn as_postgres(
    program: impl AsRef<std::ffi::OsStr>,
    env: &[(String, String)],
    home: &Path,
) -> Result<Command> {
    let user = postgres_user()?;
    let mut command = Command::new(program);
    command
        .env_clear()
        .env(
            "PATH",
            "/usr/lib/postgresql/15/bin:/usr/local/bin:/usr/bin:/bin",
        )
        .env("LANG", "C.UTF-8")
        .env("HOME", home)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .uid(user.uid.as_raw())
        .gid(user.gid.as_raw())
        .current_dir(home)
        .stdin(Stdio::null());
    Ok(command)
}

/// Spawns and registers the child (so it is never mistaken for an adopted orphan). With
/// `pdeathsig`, the child gets that signal if this process dies first.
pub fn spawn(command: &mut Command, pdeathsig: Option<Signal>) -> Result<Child> {
    if let Some(signal) = pdeathsig {
        let signal = signal as libc::c_int;
        // SAFETY: the closure only calls prctl, which is async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, signal, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let program = command.get_program().to_string_lossy().into_owned();
    let child = command
        .spawn()
        .with_context(|| format!("cannot start {program}"))?;
    register_pid(child.id());
    Ok(child)
}

/// `cargo build --release --quiet ARGS` in `workspace` (stdout discarded); the error says why
/// it failed, for a benchmark to report.
pub fn cargo_build_release(workspace: &Path, args: &[&str]) -> std::result::Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--quiet"])
        .args(args)
        .current_dir(workspace)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status();
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!(
            "`cargo build --release {}` exited with {status}",
            args.join(" ")
        )),
        Err(err) => Err(format!("cannot run cargo: {err}")),
    }
}

/// Wait until `path` exists (a socket a started process binds), polling every millisecond.
pub fn wait_for_path(path: &Path, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        if Instant::now() >= deadline {
            bail!("{} did not appear within {timeout:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// Runs a command to completion within `timeout` (killed after it); fails unless it exits 0.
/// Returns its stdout.
pub fn run_ok(command: &mut Command, timeout: Duration) -> Result<String> {
    let shown = describe(command);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn(command, Some(Signal::SIGKILL))?;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let out_reader = std::thread::spawn(move || read_all(stdout));
    let err_reader = std::thread::spawn(move || read_all(stderr));
    let status = wait_child(&mut child, timeout).with_context(|| format!("`{shown}`"))?;
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    if !status.success() {
        bail!(
            "`{shown}` exited with {status}: {}",
            tail(&format!("{stdout}{stderr}"), 2000)
        );
    }
    Ok(stdout)
}

fn read_all<R: std::io::Read>(reader: Option<R>) -> String {
    let mut out = String::new();
    if let Some(mut reader) = reader {
        let mut bytes = Vec::new();
        let _ = reader.read_to_end(&mut bytes);
        out = String::from_utf8_lossy(&bytes).into_owned();
    }
    out
}

/// Waits for a child with a deadline; kills it (SIGKILL) when the deadline passes.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Result<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().context("waiting for a child")? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("did not finish within {timeout:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Sends `signal`, waits up to `timeout`, then SIGKILLs; never fails.
pub fn stop_child(child: &mut Child, signal: Signal, timeout: Duration) {
    if let Ok(pid) = i32::try_from(child.id()) {
        if matches!(child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }
    if wait_child(child, timeout).is_err() {
        eprintln!(
            "bench: pid {} ignored {signal:?} for {timeout:?}; killed",
            child.id()
        );
    }
}

/// CPU time and peak RSS of some processes.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    pub cpu: Duration,
    pub max_rss_kb: u64,
}

impl Usage {
    pub fn add(&mut self, other: Usage) {
        self.cpu += other.cpu;
        self.max_rss_kb = self.max_rss_kb.max(other.max_rss_kb);
    }
}

fn usage_of(rusage: &libc::rusage) -> Usage {
    let tv = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    Usage {
        cpu: tv(rusage.ru_utime) + tv(rusage.ru_stime),
        max_rss_kb: u64::try_from(rusage.ru_maxrss).unwrap_or(0),
    }
}

/// `wait4(pid, WNOHANG)`: Some((exit code or 128+signal, rusage)) once the child has exited.
fn try_wait4(pid: i32) -> Result<Option<(i32, Usage)>> {
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data; wait4 fills it in.
    let mut rusage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers to a local int and a local rusage.
    let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut rusage) };
    if rc < 0 {
        bail!("wait4({pid}): {}", std::io::Error::last_os_error());
    }
    if rc == 0 {
        return Ok(None);
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        -1
    };
    Ok(Some((code, usage_of(&rusage))))
}

/// Runs `command` (already configured) to completion within `timeout`, reaping it with `wait4`
/// to get its exact rusage (CPU of it and its waited-for descendants, their largest RSS).
/// Returns the exit code (128+signal when killed) and the usage.
pub fn run_measured(command: &mut Command, timeout: Duration) -> Result<(i32, Usage)> {
    let shown = describe(command);
    let child = command
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    let pid = i32::try_from(child.id()).context("pid out of range")?;
    register_pid(child.id());
    // The std handle is dropped without waiting; wait4 below reaps the child.
    drop(child);
    let deadline = Instant::now() + timeout;
    // Woken the moment the child exits (a pidfd turns readable), not at the next poll: a
    // polling interval would add to every call a tool makes.
    let exit = PidFd::open(pid);
    let mut pause = Duration::from_micros(200);
    loop {
        if let Some(result) = try_wait4(pid)? {
            return Ok(result);
        }
        let now = Instant::now();
        if now >= deadline {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            while try_wait4(pid)?.is_none() {
                std::thread::sleep(Duration::from_millis(5));
            }
            bail!("`{shown}` did not finish within {timeout:?}; killed");
        }
        match &exit {
            Some(exit) => exit.wait(deadline - now),
            None => {
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_millis(2));
            }
        }
    }
}

/// A pidfd (Linux 5.3+): readable once the process exits.
struct PidFd(std::os::fd::OwnedFd);

impl PidFd {
    fn open(pid: i32) -> Option<PidFd> {
        use std::os::fd::FromRawFd;
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
        // SAFETY: the descriptor was just returned to us and is owned by nobody else.
        Some(PidFd(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }))
    }

    /// Waits up to `timeout` (at most a second at a time) for the process to exit.
    fn wait(&self, timeout: Duration) {
        use std::os::fd::AsRawFd;
        let mut poll = libc::pollfd {
            fd: self.0.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_millis().clamp(1, 1000) as libc::c_int;
        // SAFETY: one valid pollfd; an interrupted or failed poll just returns early.
        unsafe {
            libc::poll(&mut poll, 1, ms);
        }
    }
}

/// `pid` and all its descendants.
fn tree(pid: i32, out: &mut Vec<i32>) {
    out.push(pid);
    for child in children(pid) {
        tree(child, out);
    }
}

/// All descendants of `pid`, without `pid` itself.
fn descendants(pid: i32, out: &mut Vec<i32>) {
    for child in children(pid) {
        tree(child, out);
    }
}

/// Our children that we did not spawn: orphans adopted through the subreaper flag.
pub fn adopted_orphans() -> Vec<i32> {
    children(std::process::id() as i32)
        .into_iter()
        .filter(|pid| !is_registered(*pid))
        .collect()
}

/// `cutime + cstime` of a live process: CPU of every child it has waited for.
pub fn waited_children_cpu(pid: i32) -> Result<Duration> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    let (_, tail) = text
        .rsplit_once(')')
        .with_context(|| format!("malformed /proc/{pid}/stat"))?;
    // Fields after the command name start at field 3 (state); cutime and cstime are 16 and 17.
    let fields: Vec<&str> = tail.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("field {n} of /proc/{pid}/stat"))
    };
    let ticks = field(16)? + field(17)?;
    // SAFETY: sysconf only reads a constant.
    let hz = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
        .ok()
        .filter(|hz| *hz > 0)
        .unwrap_or(100);
    Ok(Duration::from_nanos(ticks * 1_000_000_000 / hz))
}

fn vm_hwm_kb(pid: i32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse().ok())
}

/// Samples the peak `VmHWM` of every process below the roots (not the roots themselves) every
/// 5 ms until stopped (adopted orphans are measured by `wait4` when they are reaped).
pub struct RssSampler {
    stop: Arc<AtomicBool>,
    peak_kb: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl RssSampler {
    pub fn start(roots: Vec<i32>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak_kb = Arc::new(AtomicU64::new(0));
        let thread = {
            let stop = Arc::clone(&stop);
            let peak_kb = Arc::clone(&peak_kb);
            std::thread::spawn(move || {
                let mut pids = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    pids.clear();
                    // The roots (the archiver) are not the tool's: only their descendants.
                    // Adopted orphans are not sampled: `wait4` reports their peak exactly
                    // (their own or any descendant's they waited for), and each sample costs
                    // CPU the measured tool could have used.
                    for root in &roots {
                        descendants(*root, &mut pids);
                    }
                    for pid in &pids {
                        if let Some(kb) = vm_hwm_kb(*pid) {
                            peak_kb.fetch_max(kb, Ordering::Relaxed);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(5));
                }
            })
        };
        RssSampler {
            stop,
            peak_kb,
            thread: Some(thread),
        }
    }

    /// Stops sampling; returns the peak in kB.
    pub fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.peak_kb.load(Ordering::Relaxed)
    }
}

impl Drop for RssSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Sends SIGTERM to every adopted orphan (a sidecar that runs until told to stop); collect
/// them afterwards with [`reap_orphans`].
pub fn terminate_orphans() {
    for pid in adopted_orphans() {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
}

/// Waits up to `timeout` for every adopted orphan to exit and reaps each with `wait4`; those
/// still alive then get SIGTERM, and SIGKILL a second later. Returns their summed usage and
/// how many there were.
pub fn reap_orphans(timeout: Duration) -> Result<(Usage, usize)> {
    let deadline = Instant::now() + timeout;
    let mut total = Usage::default();
    let mut count = 0;
    let mut signalled: Option<(Signal, Instant)> = None;
    loop {
        let orphans = adopted_orphans();
        if orphans.is_empty() {
            return Ok((total, count));
        }
        for pid in &orphans {
            match try_wait4(*pid) {
                Ok(Some((_, usage))) => {
                    total.add(usage);
                    count += 1;
                }
                Ok(None) => {}
                // Not our child after all (raced with its exit being collected elsewhere).
                Err(_) => register_pid(*pid as u32),
            }
        }
        let now = Instant::now();
        match signalled {
            None if now >= deadline => {
                for pid in adopted_orphans() {
                    eprintln!("bench: stopping leftover process {pid} ({})", cmdline(pid));
                    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                }
                signalled = Some((Signal::SIGTERM, now));
            }
            Some((Signal::SIGTERM, at)) if now >= at + Duration::from_secs(1) => {
                for pid in adopted_orphans() {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
                signalled = Some((Signal::SIGKILL, now));
            }
            Some((Signal::SIGKILL, at)) if now >= at + Duration::from_secs(5) => {
                bail!("processes {:?} survived SIGKILL", adopted_orphans());
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `program arg arg` without the program's directory.
pub fn describe(command: &Command) -> String {
    let program = Path::new(command.get_program())
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    std::iter::once(program)
        .chain(
            command
                .get_args()
                .map(|arg| arg.to_string_lossy().into_owned()),
        )
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last `max` bytes of `text` (on a char boundary).
pub fn tail(text: &str, max: usize) -> &str {
    let text = text.trim();
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_keeps_the_end_on_a_char_boundary() {
        assert_eq!(tail("  hello  ", 3), "llo");
        assert_eq!(tail("héllo", 4), "llo");
        assert_eq!(tail("abc", 10), "abc");
    }

    #[test]
    fn reads_our_own_children_cpu() {
        let cpu = waited_children_cpu(std::process::id() as i32);
        assert!(cpu.is_ok(), "{cpu:?}");
    }

    #[test]
    fn usage_adds_cpu_and_keeps_the_larger_rss() {
        let mut a = Usage {
            cpu: Duration::from_millis(5),
            max_rss_kb: 10,
        };
        a.add(Usage {
            cpu: Duration::from_millis(7),
            max_rss_kb: 4,
        });
        assert_eq!(a.cpu, Duration::from_millis(12));
        assert_eq!(a.max_rss_kb, 10);
    }
}
