//! Dropping root privileges to the postgres operating-system user before anything else runs
//! (postgres refuses to run as root): supplementary groups, then gid, then uid.

use std::ffi::CString;

use anyhow::{bail, Context, Result};
use nix::unistd::{self, Gid, Uid, User};

/// What the process runs as after `drop_to`.
#[derive(Debug, Clone, PartialEq)]
pub struct RunAs {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: std::path::PathBuf,
}

/// The current user, when not root.
pub fn current_user() -> Result<RunAs> {
    let uid = unistd::getuid();
    let user = User::from_uid(uid)
        .context("looking up the current user")?
        .with_context(|| format!("uid {uid} has no passwd entry"))?;
    Ok(RunAs {
        name: user.name,
        uid: uid.as_raw(),
        gid: unistd::getgid().as_raw(),
        home: user.dir,
    })
}

/// Look up `name` (a user name or a numeric uid).
pub fn lookup(name: &str) -> Result<User> {
    let user = match name.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(name),
    }
    .with_context(|| format!("looking up user {name:?}"))?;
    user.with_context(|| format!("user {name:?} does not exist"))
}

/// Become `user`: initgroups, setgid, setuid; then verify root cannot be regained.
pub fn drop_to(user: &User) -> Result<RunAs> {
    if user.uid.is_root() {
        bail!("--user must name an unprivileged user: postgres refuses to run as root");
    }
    let cname = CString::new(user.name.as_bytes()).context("user name contains NUL")?;
    unistd::initgroups(&cname, user.gid).context("initgroups")?;
    unistd::setgid(user.gid).context("setgid")?;
    unistd::setuid(user.uid).context("setuid")?;
    if unistd::setuid(Uid::from_raw(0)).is_ok() {
        bail!("privileges were not dropped: setuid(0) still succeeds");
    }
    if unistd::getegid() != user.gid || unistd::geteuid() != user.uid {
        bail!("privileges were not dropped completely");
    }
    let _ = Gid::current();
    Ok(RunAs {
        name: user.name.clone(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
        home: user.dir.clone(),
    })
}
