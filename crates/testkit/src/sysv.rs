//! SysV shared memory of test postmasters. Every postmaster creates one small SysV segment
//! (56 bytes, its "interlock") besides its mmap'ed shared memory. A clean or immediate shutdown
//! removes it; a postmaster killed with SIGKILL leaves it behind until something calls
//! `IPC_RMID`, and postgres only removes it itself when it starts again on the same data
//! directory. Test data directories are thrown away, and the kernel holds at most
//! `kernel.shmmni` (4096) segments: once a few hundred test runs had leaked that many, every
//! new postmaster failed with "could not create shared memory segment: No space left on
//! device". So the harness removes the segment of each postmaster it kills
//! ([`segment_of`] before the kill, [`remove`] after, and [`remove_orphans`] for those whose
//! data directory went first), and [`check_capacity`] fails a test at once, with the cause and
//! the fix, when the table is nearly full.

use std::path::Path;

/// Free SysV identifiers a test needs at least (a three-member cluster restarted a few times).
const NEEDED_FREE: usize = 32;

/// One postmaster's SysV segment, as `postmaster.pid` records it (line 7: key and shmid).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub key: i64,
    pub shmid: i32,
}

/// The segment named in `pgdata/postmaster.pid`, if the file exists and records one.
pub fn segment_of(pgdata: &Path) -> Option<Segment> {
    let text = std::fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    parse_pid_file(&text)
}

fn parse_pid_file(text: &str) -> Option<Segment> {
    let mut fields = text.lines().nth(6)?.split_whitespace();
    let key = fields.next()?.parse().ok()?;
    let shmid = fields.next()?.parse().ok()?;
    Some(Segment { key, shmid })
}

/// Removes `segment` when the identifier still belongs to that key (identifiers are reused
/// once freed, so a segment created since by another postmaster is left alone). The kernel
/// destroys it once the last attached process has exited. Returns whether it was marked.
pub fn remove(segment: Segment) -> bool {
    // SAFETY: shmid_ds is plain old data; IPC_STAT only writes into it.
    let mut info: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: a valid pointer to a shmid_ds; a stale shmid only makes the call fail.
    if unsafe { libc::shmctl(segment.shmid, libc::IPC_STAT, &mut info) } != 0 {
        return false;
    }
    if i64::from(info.shm_perm.__key) != segment.key {
        return false;
    }
    // SAFETY: IPC_RMID ignores the buffer argument.
    unsafe { libc::shmctl(segment.shmid, libc::IPC_RMID, std::ptr::null_mut()) == 0 }
}

/// Removes every segment of the `postgres` user that no process is attached to and whose
/// creator (its postmaster) is gone: what a killed postmaster leaves when its data directory,
/// and with it `postmaster.pid`, was removed before the harness could read it. Safe beside
/// other tests' instances: a running postmaster stays attached to its segment, and one
/// starting again on a data directory whose old segment is gone creates a new one. Returns how
/// many were removed.
pub fn remove_orphans() -> usize {
    left_behind()
        .into_iter()
        .filter(|segment| remove(*segment))
        .count()
}

/// The `postgres` user's segments no process is attached to and whose creator is gone: what
/// killed postmasters left behind.
pub fn left_behind() -> Vec<Segment> {
    let Ok(Some(postgres)) = nix::unistd::User::from_name("postgres") else {
        return Vec::new();
    };
    let Ok(table) = std::fs::read_to_string("/proc/sysvipc/shm") else {
        return Vec::new();
    };
    orphans(&table, postgres.uid.as_raw())
        .into_iter()
        .filter(|(_, creator)| !crate::proc::alive(*creator))
        .map(|(segment, _)| segment)
        .collect()
}

/// Segments of `uid` with no process attached, and their creators' pids, from the text of
/// `/proc/sysvipc/shm` (columns: key shmid perms size cpid lpid nattch uid ...).
fn orphans(table: &str, uid: u32) -> Vec<(Segment, i32)> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let number = |i: usize| fields.get(i).and_then(|f| f.parse::<i64>().ok());
            let (key, shmid, cpid) = (number(0)?, number(1)?, number(4)?);
            (number(6)? == 0 && number(7)? == i64::from(uid)).then_some((
                Segment {
                    key,
                    shmid: i32::try_from(shmid).ok()?,
                },
                i32::try_from(cpid).ok()?,
            ))
        })
        .collect()
}

/// Segments in use and the kernel's limit, from `/proc`.
pub fn usage() -> Option<(usize, usize)> {
    let table = std::fs::read_to_string("/proc/sysvipc/shm").ok()?;
    let used = table
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count();
    let limit = std::fs::read_to_string("/proc/sys/kernel/shmmni")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some((used, limit))
}

/// Fails when fewer than a test's worth of SysV identifiers are free, saying why and how to
/// free them, instead of letting postgres crash-loop until a readiness deadline.
pub fn check_capacity() -> Result<(), String> {
    let Some((used, limit)) = usage() else {
        return Ok(());
    };
    if used + NEEDED_FREE <= limit {
        return Ok(());
    }
    Err(format!(
        "{used} of the kernel's {limit} SysV shared memory segments are in use \
         (kernel.shmmni), so new postmasters would fail with \"could not create shared memory \
         segment\". They are most likely left by postmasters killed with SIGKILL; `ipcs -m` \
         lists them, and `bash .ci/prereqs` removes the postgres-owned ones no process is \
         attached to"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_key_and_shmid_from_line_seven() {
        let pid_file = "4242\n/tmp/data\n1796568909\n5432\n/tmp/sock\n127.0.0.1\n  10035714    327680\nready   \n";
        assert_eq!(
            parse_pid_file(pid_file),
            Some(Segment {
                key: 10035714,
                shmid: 327680
            })
        );
        assert_eq!(parse_pid_file("4242\n/tmp/data\n"), None);
        assert_eq!(parse_pid_file("1\n2\n3\n4\n5\n6\nnot numbers\n"), None);
    }

    #[test]
    fn finds_unattached_segments_of_one_user() {
        let table = "       key      shmid perms                  size  cpid  lpid nattch   uid   gid  cuid  cgid      atime      dtime      ctime                   rss                  swap
  10035714     327680   600                    56  1318  1324      0   101   104   101   104 1796568909 1796568909 1796568909                  4096                     0
  10078388     425985   600                    56  4180  4256      1   101   104   101   104 1796569130 1796569130 1796569127                  4096                     0
  10078390     425986   600                    56  4190  4256      0     0     0     0     0 1796569130 1796569130 1796569127                  4096                     0
";
        assert_eq!(
            orphans(table, 101),
            vec![(
                Segment {
                    key: 10035714,
                    shmid: 327680
                },
                1318
            )]
        );
    }

    #[test]
    fn removing_a_foreign_or_stale_identifier_is_refused() {
        // SAFETY: creates a private segment this test owns.
        let shmid = unsafe { libc::shmget(libc::IPC_PRIVATE, 56, 0o600) };
        assert!(shmid >= 0, "shmget: {}", std::io::Error::last_os_error());
        // IPC_PRIVATE has key 0: a segment recorded under another key is not removed.
        assert!(!remove(Segment { key: 1, shmid }));
        assert!(remove(Segment { key: 0, shmid }));
        // Removed: the identifier no longer answers.
        assert!(!remove(Segment { key: 0, shmid }));
    }
}
