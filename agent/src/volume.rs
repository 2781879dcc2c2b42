//! Carries out a container's `Prepare` steps on the host: hostPath checks, emptyDir
//! directories (a size-limited tmpfs for `medium: Memory`), and ConfigMap and Secret
//! files. Projected files are swapped in the way the kubelet does it — a new
//! `..<timestamp>` directory, then the `..data` symlink renamed over the old one — so a
//! reader inside the container sees the old set or the new set, never half of each.
//! Secrets live on a tmpfs: they never reach the SD card.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use crate::podspec::{Prepare, ProjectedFile};
use crate::runtime::host;

const DATA_LINK: &str = "..data";

pub fn prepare(step: &Prepare) -> Result<(), String> {
    match step {
        Prepare::HostPath(check) => crate::hostpath::prepare(check),
        Prepare::EmptyDir {
            path,
            memory,
            size_limit,
            gid,
        } => empty_dir(path, *memory, *size_limit, *gid),
        Prepare::Files {
            path,
            files,
            memory,
            gid,
        } => {
            if *memory {
                // Enough for the 1 MiB a Secret may hold, several times over while swapping.
                empty_dir(path, true, Some(4 << 20), None)?;
            } else {
                make_dir(path, 0o755)?;
            }
            project(path, files, *gid)
        }
    }
}

fn make_dir(path: &Path, mode: u32) -> Result<(), String> {
    fs::create_dir_all(path).map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| format!("cannot set the mode of {}: {e}", path.display()))
}

fn empty_dir(path: &Path, memory: bool, size: Option<u64>, gid: Option<u32>) -> Result<(), String> {
    // World-writable like Kubernetes' emptyDir: any uid the container runs as can use it.
    let mode = if gid.is_some() { 0o2777 } else { 0o777 };
    make_dir(path, mode)?;
    if memory && !host::is_mount_point(path) {
        let mut options = format!("mode={mode:o}");
        if let Some(size) = size {
            options.push_str(&format!(",size={size}"));
        }
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options.as_str()),
        )
        .map_err(|e| format!("cannot mount a tmpfs on {}: {e}", path.display()))?;
    }
    if let Some(gid) = gid {
        chown_group(path, gid)?;
    }
    Ok(())
}

fn chown_group(path: &Path, gid: u32) -> Result<(), String> {
    nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
        .map_err(|e| format!("cannot give {} to group {gid}: {e}", path.display()))
}

/// Writes `files` under `dir` unless they are already what `..data` points at.
fn project(dir: &Path, files: &[ProjectedFile], gid: Option<u32>) -> Result<(), String> {
    let current = fs::read_link(dir.join(DATA_LINK)).ok();
    if let Some(cur) = &current {
        if same_contents(&dir.join(cur), files) {
            return Ok(());
        }
    }
    let stamp = format!(
        "..{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let fresh = dir.join(&stamp);
    make_dir(&fresh, 0o755)?;
    for f in files {
        let target = fresh.join(&f.path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)
                .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
        }
        let mut file = fs::File::create(&target)
            .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
        file.write_all(&f.data)
            .and_then(|_| file.sync_all())
            .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
        fs::set_permissions(&target, fs::Permissions::from_mode(f.mode))
            .map_err(|e| format!("cannot set the mode of {}: {e}", target.display()))?;
        if let Some(gid) = gid {
            chown_group(&target, gid)?;
        }
    }
    let tmp_link = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp_link);
    symlink(&stamp, &tmp_link).map_err(|e| format!("cannot link {}: {e}", tmp_link.display()))?;
    fs::rename(&tmp_link, dir.join(DATA_LINK))
        .map_err(|e| format!("cannot switch {} to new contents: {e}", dir.display()))?;
    // Top-level names point through ..data, so they follow the swap.
    let mut tops: Vec<&str> = files
        .iter()
        .map(|f| f.path.split('/').next().unwrap_or(&f.path))
        .collect();
    tops.sort_unstable();
    tops.dedup();
    for top in &tops {
        let link = dir.join(top);
        if fs::symlink_metadata(&link).is_err() {
            symlink(PathBuf::from(DATA_LINK).join(top), &link)
                .map_err(|e| format!("cannot link {}: {e}", link.display()))?;
        }
    }
    // What the old contents had and the new ones do not: links and directories go.
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name == DATA_LINK || name == stamp {
                continue;
            }
            if name.starts_with("..") {
                let _ = fs::remove_dir_all(e.path());
            } else if !tops.contains(&name.as_str()) {
                let _ = fs::remove_file(e.path());
            }
        }
    }
    Ok(())
}

fn same_contents(dir: &Path, files: &[ProjectedFile]) -> bool {
    let count = walk_count(dir);
    count == Some(files.len())
        && files.iter().all(|f| {
            let p = dir.join(&f.path);
            fs::read(&p).is_ok_and(|d| d == f.data)
                && fs::metadata(&p).is_ok_and(|m| m.permissions().mode() & 0o777 == f.mode)
        })
}

fn walk_count(dir: &Path) -> Option<usize> {
    let mut n = 0;
    for e in fs::read_dir(dir).ok()?.flatten() {
        let ft = e.file_type().ok()?;
        if ft.is_dir() {
            n += walk_count(&e.path())?;
        } else {
            n += 1;
        }
    }
    Some(n)
}

/// Bytes used by the files under `dir` (what an emptyDir's `sizeLimit` counts).
pub fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_usage(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map(|m| m.blocks() * 512).unwrap_or(0),
            _ => 0,
        })
        .sum()
}

/// Unmounts every tmpfs under a Pod's directory (Memory emptyDirs, Secrets) so that the
/// directory can be deleted; deepest first.
pub fn unmount_all_under(dir: &Path) {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let root = fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let mut points: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(m.replace("\\040", " ")))
        .filter(|m| m.starts_with(&root))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for p in points {
        if let Err(e) = host::unmount_if_mounted(&p) {
            tracing::warn!(error = %e, "could not unmount a Pod volume");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, data: &str) -> ProjectedFile {
        ProjectedFile {
            path: path.into(),
            data: data.as_bytes().to_vec(),
            mode: 0o644,
        }
    }

    #[test]
    fn projected_files_swap_atomically_and_drop_removed_keys() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("conf");
        let step = |files: Vec<ProjectedFile>| Prepare::Files {
            path: dir.clone(),
            files,
            memory: false,
            gid: None,
        };
        prepare(&step(vec![file("a.txt", "1"), file("sub/b.txt", "2")])).unwrap();
        assert_eq!(fs::read_to_string(dir.join("a.txt")).unwrap(), "1");
        assert_eq!(fs::read_to_string(dir.join("sub/b.txt")).unwrap(), "2");
        let first = fs::read_link(dir.join(DATA_LINK)).unwrap();

        prepare(&step(vec![file("a.txt", "1"), file("sub/b.txt", "2")])).unwrap();
        assert_eq!(
            fs::read_link(dir.join(DATA_LINK)).unwrap(),
            first,
            "unchanged: no swap"
        );

        prepare(&step(vec![file("a.txt", "new")])).unwrap();
        assert_eq!(fs::read_to_string(dir.join("a.txt")).unwrap(), "new");
        assert!(!dir.join("sub").exists(), "a removed key disappears");
        assert!(!dir.join(&first).exists(), "the old generation is deleted");
    }
}
