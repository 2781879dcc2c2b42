//! Persistent network namespaces: a namespace bind-mounted on a file outlives the
//! process that made it, so a Pod's network survives an agent crash and its containers
//! join it by path. Made the way `ip netns add` does, from a short-lived thread of our
//! own: unsharing changes only the calling thread, and a tokio worker must never be
//! moved into another namespace.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

/// True when `path` is a mounted namespace (nsfs), false when it is missing or a plain
/// file (a mount lost, e.g. unmounted by hand).
pub fn is_netns(path: &Path) -> io::Result<bool> {
    match nix::sys::statfs::statfs(path) {
        Ok(fs) => Ok(fs.filesystem_type() == nix::sys::statfs::NSFS_MAGIC),
        Err(nix::errno::Errno::ENOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Makes a new network namespace mounted on `path` unless one is already there; returns
/// whether it made one.
pub async fn create(path: &Path) -> io::Result<bool> {
    if is_netns(path)? {
        return Ok(false);
    }
    let path = path.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("punnet-netns".into())
        .spawn(move || {
            let _ = tx.send(create_on_this_thread(&path));
        })?;
    rx.await
        .map_err(|_| io::Error::other("the namespace thread ended without an answer"))??;
    Ok(true)
}

/// Runs on a thread that ends right after: the thread is left inside the new namespace.
fn create_on_this_thread(path: &PathBuf) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    let made = unshare(CloneFlags::CLONE_NEWNET).and_then(|()| {
        mount(
            Some("/proc/thread-self/ns/net"),
            path.as_path(),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    });
    if let Err(e) = made {
        let _ = fs::remove_file(path);
        return Err(e.into());
    }
    Ok(())
}

/// Unmounts and removes `path`. Nothing there is fine (already removed, or /run was
/// cleared by a reboot). The namespace itself goes away once no process is in it.
pub async fn remove(path: &Path) -> io::Result<()> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || remove_now(&path))
        .await
        .map_err(io::Error::other)?
}

fn remove_now(path: &Path) -> io::Result<()> {
    // Detach every mount stacked there (a racing double create could leave two).
    for _ in 0..16 {
        match umount2(path, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => break,
            Err(e) => return Err(e.into()),
        }
    }
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
