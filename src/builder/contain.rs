//! Containment after the install (issue 19, DESIGN section 16): the installer and every build backend it ran
//! are other people's code, so once the installer has exited nothing of it may run on, and nothing it could
//! have touched is followed or trusted.
//!
//! The protocol, in the order [`super::run`] applies it:
//! 1. Before the installer starts, layer-builder becomes a child subreaper (`PR_SET_CHILD_SUBREAPER`): a process
//!    the install leaves behind (fork, `setsid`, double fork) is re-parented to layer-builder instead of init,
//!    so it stays a descendant whatever it does.
//! 2. When the installer exits, [`end_leftovers`] kills every descendant with `SIGKILL`, pass after pass (the
//!    children of a killed process come back to the subreaper and are killed in the next pass), reaps them,
//!    and checks that none is left; only then are the installer's output pipes drained, so a leftover holding
//!    them open can't hang the build. Only descendants are touched: other builds on the same host (the local
//!    cloud, parallel tests) may run as the same build user.
//! 3. [`take_back`] walks the install tree from a directory descriptor, never following a link
//!    (`openat(O_NOFOLLOW)` at every step, the tree's root and each of its parents included), and gives every
//!    folder, file and link to root (`fchown`), with the write bits off; from then on only root can change it.
//! 4. Every file is later opened by [`open_listed`]: walked from `/` one component at a time without following
//!    a link, and checked against the (device, inode, size) it had when it was listed; anything else is an
//!    error naming the file.
//! 5. The zip is written into a folder only root can enter, created with `O_CREAT|O_EXCL|O_NOFOLLOW`
//!    ([`create_private`]), and uploaded from that open file.

use std::{
    ffi::{CString, OsStr},
    fs::File,
    io,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::{Component, Path},
    time::{Duration, Instant},
};

use tracing::{info, warn};

/// How long [`end_leftovers`] keeps killing before it gives up (a fork bomb outrunning `SIGKILL`).
const KILL_BUDGET: Duration = Duration::from_secs(20);

/// What identifies a listed file: it is the same, unchanged file at zip time only if all of these agree. The
/// change time can't be set from user space, and any write, chmod, chown or rename moves it, so a file replaced
/// by another that reuses its inode and size is still caught.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
    pub ctime: (i64, i64),
}

impl FileId {
    pub fn of(metadata: &std::fs::Metadata) -> Self {
        Self {
            dev: metadata.dev(),
            ino: metadata.ino(),
            len: metadata.len(),
            ctime: (metadata.ctime(), metadata.ctime_nsec()),
        }
    }
}

/// Makes this process the subreaper of everything it starts from now on (Linux 3.4+).
pub fn become_subreaper() -> io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer flag and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One process seen in `/proc`.
#[derive(Debug, Clone, Copy)]
struct Proc {
    pid: i32,
    ppid: i32,
    zombie: bool,
    /// Clock ticks after boot when it started (`stat` field 22): with the pid, who it is.
    start: u64,
}

/// `pid`'s parent and start time, read now; `None` once it is gone.
fn stat_of(pid: i32) -> Option<(i32, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state (3), ppid (4), … starttime (22); `fields[0]` is field 3.
    Some((fields.get(1)?.parse().ok()?, fields.get(19)?.parse().ok()?))
}

fn processes() -> io::Result<Vec<Proc>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        // A process may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid …"; comm may hold spaces and parentheses, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let state = fields.first().copied().unwrap_or("");
        let (Some(ppid), Some(start)) = (
            fields.get(1).and_then(|p| p.parse().ok()),
            fields.get(19).and_then(|p| p.parse().ok()),
        ) else {
            continue;
        };
        out.push(Proc {
            pid,
            ppid,
            zombie: state == "Z" || state == "X",
            start,
        });
    }
    Ok(out)
}

/// Every descendant of `root` among `procs`.
fn descendants(procs: &[Proc], root: i32) -> Vec<Proc> {
    let mut found: Vec<Proc> = Vec::new();
    let mut frontier = vec![root];
    while let Some(parent) = frontier.pop() {
        for p in procs.iter().filter(|p| p.ppid == parent) {
            if !found.iter().any(|f| f.pid == p.pid) {
                found.push(*p);
                frontier.push(p.pid);
            }
        }
    }
    found
}

/// The installer left processes that could not be ended, or they could not be looked for.
#[derive(Debug, thiserror::Error)]
pub enum Survivors {
    #[error(
        "{count} process(es) started by the install were still alive after {seconds} s of SIGKILL (pids \
         {pids:?}); nothing of the tree is read while they run"
    )]
    Alive {
        count: usize,
        seconds: u64,
        pids: Vec<i32>,
    },
    #[error(
        "the processes the install left behind can't be listed (/proc: {0}); nothing of the tree is read"
    )]
    Unlisted(io::Error),
}

/// Sends SIGKILL to the process `p` was when it was listed, and to nothing else: through a pidfd (Linux 5.3+),
/// opened and then checked against the listed parent and start time, so a pid reused since the listing (a
/// grandchild reaped by its own parent) is never hit. A zombie is signalled too: when a thread group's leader
/// has exited (`pthread_exit`), its other threads live on behind the zombie, and SIGKILL reaches them.
fn kill_listed(p: &Proc) {
    // SAFETY: pidfd_open takes a pid and flags; it returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, p.pid, 0) };
    if fd < 0 {
        let gone = io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
        if !gone && stat_of(p.pid) == Some((p.ppid, p.start)) {
            // No pidfd here (a kernel before 5.3, or a seccomp filter that refuses it): a plain kill after the
            // same check, which narrows a reused pid to the moment between the two calls.
            // SAFETY: kill takes plain integers.
            unsafe { libc::kill(p.pid, libc::SIGKILL) };
        }
        return;
    }
    // SAFETY: the descriptor was just returned to us and nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    if stat_of(p.pid) != Some((p.ppid, p.start)) {
        return; // not the process listed (it was reparented to us, or the pid was reused): next pass
    }
    // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo, no flags.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// Kills every descendant of this process (see the module docs), reaps them, and checks none is left.
/// Returns how many processes were killed.
pub fn end_leftovers() -> Result<usize, Survivors> {
    let me = std::process::id() as i32;
    let started = Instant::now();
    let mut killed = std::collections::BTreeSet::new();
    loop {
        let procs = processes().map_err(Survivors::Unlisted)?;
        let left = descendants(&procs, me);
        if left.is_empty() {
            if !killed.is_empty() {
                warn!(
                    killed = killed.len(),
                    "processes left behind by the install were killed"
                );
            }
            return Ok(killed.len());
        }
        for p in &left {
            kill_listed(p);
            if !p.zombie {
                killed.insert(p.pid);
            }
        }
        // Reap our own children (killed ones and re-parented orphans); grandchildren come back to us as their
        // parents die.
        for p in left.iter().filter(|p| p.ppid == me) {
            let mut status = 0;
            // SAFETY: waitpid on a pid that is our child, with a valid pointer to a local.
            unsafe { libc::waitpid(p.pid, &mut status, libc::WNOHANG) };
        }
        if started.elapsed() > KILL_BUDGET {
            let pids: Vec<i32> = left.iter().map(|p| p.pid).collect();
            return Err(Survivors::Alive {
                count: pids.len(),
                seconds: KILL_BUDGET.as_secs(),
                pids,
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn cstring(name: &OsStr) -> io::Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a file name holds a NUL byte: {name:?}"),
        )
    })
}

/// `openat(dir, name, flags | O_NOFOLLOW | O_CLOEXEC)`.
fn open_at(dir: Option<&OwnedFd>, name: &OsStr, flags: i32) -> io::Result<OwnedFd> {
    let c = cstring(name)?;
    let dirfd = dir.map_or(libc::AT_FDCWD, AsRawFd::as_raw_fd);
    // SAFETY: a valid NUL-terminated path and a directory descriptor we own (or AT_FDCWD).
    let fd = unsafe {
        libc::openat(
            dirfd,
            c.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: openat just returned this descriptor, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn link_error(path: &Path, e: io::Error) -> io::Error {
    // O_NOFOLLOW on a symbolic link fails with ELOOP; O_DIRECTORY on a link to a folder with ENOTDIR.
    if matches!(e.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR)) {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is a symbolic link or not a folder: no link is followed in the install tree or its parents",
                path.display()
            ),
        )
    } else {
        io::Error::new(e.kind(), format!("{}: {e}", path.display()))
    }
}

/// Opens the folder `path` (absolute) walking from `/` one component at a time, following no link.
pub fn open_dir_no_links(path: &Path) -> io::Result<OwnedFd> {
    let mut dir: Option<OwnedFd> = None;
    let mut walked = std::path::PathBuf::from("/");
    for component in path.components() {
        match component {
            Component::RootDir => {
                dir = Some(open_at(
                    None,
                    OsStr::new("/"),
                    libc::O_RDONLY | libc::O_DIRECTORY,
                )?);
            }
            Component::Normal(name) => {
                walked.push(name);
                let next = open_at(dir.as_ref(), name, libc::O_RDONLY | libc::O_DIRECTORY)
                    .map_err(|e| link_error(&walked, e))?;
                dir = Some(next);
            }
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{} is not an absolute, normal path", path.display()),
                ));
            }
        }
    }
    dir.ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty path"))
}

fn fstat(fd: &OwnedFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value to be overwritten; fd is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fd is an open descriptor and st a valid pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// Opens a listed file for reading: every component of `path` (absolute) without following a link, the file
/// itself non-blocking (a FIFO can't stall the build), and it must be the regular file `expect` describes.
pub fn open_listed(path: &Path, expect: FileId) -> io::Result<File> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no parent", path.display()),
        ));
    };
    let dir = open_dir_no_links(parent)?;
    let fd = open_at(Some(&dir), name, libc::O_RDONLY | libc::O_NONBLOCK)
        .map_err(|e| link_error(path, e))?;
    let st = fstat(&fd)?;
    let seen = FileId {
        dev: st.st_dev,
        ino: st.st_ino,
        len: st.st_size as u64,
        ctime: (st.st_ctime, st.st_ctime_nsec),
    };
    if st.st_mode & libc::S_IFMT != libc::S_IFREG || seen != expect {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} changed after the tree was listed (listed {expect:?}, found {seen:?}): refused",
                path.display()
            ),
        ));
    }
    // Reads block normally from here on.
    // SAFETY: fcntl on an open descriptor with integer flags.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, libc::O_RDONLY) };
    Ok(File::from(fd))
}

/// Creates `path` for writing, as a new file only (`O_CREAT|O_EXCL|O_NOFOLLOW`, mode 0600): a name planted
/// there before, file or link, makes it fail instead of being written through.
pub fn create_private(path: &Path) -> io::Result<File> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} has no parent", path.display()),
        ));
    };
    let dir = open_dir_no_links(parent)?;
    let c = cstring(name)?;
    // SAFETY: a valid NUL-terminated name and an open directory descriptor.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        )
    };
    if fd < 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
    }
    // SAFETY: openat just returned this descriptor.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// What [`take_back`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TakenBack {
    pub folders: usize,
    pub files: usize,
    pub links: usize,
    /// FIFOs, sockets, devices: given to root too, never opened (the zip leaves them out).
    pub other: usize,
}

/// Folders deeper than this in an install tree are refused (no package nests anywhere near it; it bounds the
/// descriptors and the stack the walk holds).
pub const MAX_TREE_DEPTH: usize = 256;

/// Gives the tree under `root` (absolute; it and every parent must be real folders) to root:root, write bits
/// off, without following any link. Run after [`end_leftovers`]: from then on only root can change the tree.
///
/// With `owner` (the build user's uid, when layer-builder is root), every entry must be that user's: the install
/// created all of them. Anything else is a hard link to a file from outside the tree (a user can link a file it
/// does not own when `fs.protected_hardlinks` is 0, or one it can read and write when it is 1); taking it back
/// would change that file outside and zip its content, so the build is refused, naming it.
pub fn take_back(root: &Path, owner: Option<u32>) -> io::Result<TakenBack> {
    let dir = open_dir_no_links(root)?;
    let mut counts = TakenBack::default();
    take_back_dir(&dir, root, owner, 0, &mut counts)?;
    info!(
        root = %root.display(),
        folders = counts.folders,
        files = counts.files,
        links = counts.links,
        other = counts.other,
        "install tree taken back"
    );
    Ok(counts)
}

fn chown_chmod(fd: &OwnedFd, mode: u32, path: &Path) -> io::Result<()> {
    // SAFETY: fchown/fchmod on an open descriptor with integer arguments.
    let rc = unsafe {
        if libc::fchown(fd.as_raw_fd(), 0, 0) != 0 {
            -1
        } else {
            libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t)
        }
    };
    if rc != 0 {
        let e = io::Error::last_os_error();
        // Not root (a developer's own build): the tree is already ours, there is no one to take it from.
        if e.raw_os_error() == Some(libc::EPERM) && !is_root() {
            return Ok(());
        }
        return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display())));
    }
    Ok(())
}

fn take_back_dir(
    dir: &OwnedFd,
    path: &Path,
    owner: Option<u32>,
    depth: usize,
    counts: &mut TakenBack,
) -> io::Result<()> {
    if depth > MAX_TREE_DEPTH {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{} is more than {MAX_TREE_DEPTH} folders deep: refused",
                path.display()
            ),
        ));
    }
    chown_chmod(dir, 0o755, path)?;
    counts.folders += 1;
    // The folder's entries, listed through the descriptor (the path may no longer lead to it).
    let listing = format!("/proc/self/fd/{}", dir.as_raw_fd());
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&listing)? {
        names.push(entry?.file_name());
    }
    for name in names {
        let child = path.join(&name);
        let c = cstring(&name)?;
        // SAFETY: an all-zero stat is valid to overwrite; dir is open, c NUL-terminated.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe {
            libc::fstatat(
                dir.as_raw_fd(),
                c.as_ptr(),
                &mut st,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        } != 0
        {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("{}: {e}", child.display()),
            ));
        }
        if let Some(uid) = owner
            && st.st_uid != uid
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} belongs to uid {}, not to the build user ({uid}): a hard link to a file from outside the \
                     install tree? refused, and left as it is",
                    child.display(),
                    st.st_uid
                ),
            ));
        }
        match st.st_mode & libc::S_IFMT {
            libc::S_IFDIR => {
                let sub = open_at(Some(dir), &name, libc::O_RDONLY | libc::O_DIRECTORY)
                    .map_err(|e| link_error(&child, e))?;
                take_back_dir(&sub, &child, owner, depth + 1, counts)?;
            }
            libc::S_IFREG => {
                let fd = open_at(Some(dir), &name, libc::O_RDONLY | libc::O_NONBLOCK)
                    .map_err(|e| link_error(&child, e))?;
                if fstat(&fd)?.st_ino != st.st_ino {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!(
                            "{} changed while it was taken back: refused",
                            child.display()
                        ),
                    ));
                }
                let mode = if st.st_mode & 0o111 != 0 {
                    0o755
                } else {
                    0o644
                };
                chown_chmod(&fd, mode, &child)?;
                counts.files += 1;
            }
            kind => {
                // A link (its target is never touched) or a special file: owned by root, left where it is.
                // SAFETY: dir is open, c NUL-terminated; AT_SYMLINK_NOFOLLOW changes the entry itself.
                if unsafe {
                    libc::fchownat(dir.as_raw_fd(), c.as_ptr(), 0, 0, libc::AT_SYMLINK_NOFOLLOW)
                } != 0
                {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EPERM) || is_root() {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("{}: {e}", child.display()),
                        ));
                    }
                }
                if kind == libc::S_IFLNK {
                    counts.links += 1;
                } else {
                    counts.other += 1;
                }
            }
        }
    }
    Ok(())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and can't fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn descendants_follow_parent_links_only() {
        let procs = [
            Proc {
                pid: 10,
                ppid: 1,
                zombie: false,
                start: 1,
            },
            Proc {
                pid: 11,
                ppid: 10,
                zombie: false,
                start: 1,
            },
            Proc {
                pid: 12,
                ppid: 11,
                zombie: true,
                start: 1,
            },
            Proc {
                pid: 13,
                ppid: 1,
                zombie: false,
                start: 1,
            },
            Proc {
                pid: 14,
                ppid: 13,
                zombie: false,
                start: 1,
            },
        ];
        let mut found: Vec<i32> = descendants(&procs, 10).iter().map(|p| p.pid).collect();
        found.sort();
        assert_eq!(found, [11, 12]);
        assert!(descendants(&procs, 12).is_empty());
    }

    #[test]
    fn links_are_never_followed_on_the_way_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir(root.join("real")).unwrap();
        std::fs::write(root.join("real/f.txt"), "hello").unwrap();
        symlink(root.join("real"), root.join("via")).unwrap();
        symlink(root.join("real/f.txt"), root.join("real/alias.txt")).unwrap();
        let id = FileId::of(&std::fs::metadata(root.join("real/f.txt")).unwrap());

        let mut text = String::new();
        use std::io::Read as _;
        open_listed(&root.join("real/f.txt"), id)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "hello");
        for through_a_link in ["via/f.txt", "real/alias.txt"] {
            let err = open_listed(&root.join(through_a_link), id).unwrap_err();
            assert!(
                err.to_string().contains("symbolic link"),
                "{through_a_link}: {err}"
            );
        }
        // The same name, another file: refused.
        std::fs::remove_file(root.join("real/f.txt")).unwrap();
        std::fs::write(root.join("real/f.txt"), "HELLO").unwrap();
        let err = open_listed(&root.join("real/f.txt"), id).unwrap_err();
        assert!(err.to_string().contains("changed after"), "{err}");
    }

    #[test]
    fn a_private_file_is_never_written_through_a_planted_name() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let victim = root.join("victim");
        std::fs::write(&victim, "keep").unwrap();
        symlink(&victim, root.join("layer.zip")).unwrap();
        assert!(create_private(&root.join("layer.zip")).is_err());
        std::fs::write(root.join("plain.zip"), "x").unwrap();
        assert!(create_private(&root.join("plain.zip")).is_err());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        let f = create_private(&root.join("new.zip")).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(f.metadata().unwrap().permissions().mode() & 0o777, 0o600);
    }

    #[test]
    fn take_back_refuses_a_linked_root_and_leaves_link_targets_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let outside = root.join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("secret"), "s").unwrap();
        std::fs::create_dir_all(root.join("tree/pkg")).unwrap();
        std::fs::write(root.join("tree/pkg/a.py"), "a").unwrap();
        symlink(outside.join("secret"), root.join("tree/pkg/s")).unwrap();
        symlink(&outside, root.join("linked-tree")).unwrap();

        let counts = take_back(&root.join("tree"), None).unwrap();
        assert_eq!((counts.folders, counts.files, counts.links), (2, 1, 1));
        let err = take_back(&root.join("linked-tree"), None).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
    }
}
