//! Unpacks one image layer (a tar stream, gzip or not) into a directory that overlayfs
//! can use as a lower layer: OCI whiteouts become overlay whiteouts, and the
//! uncompressed stream is hashed on the way so the layer's diff-id can be checked.

use std::ffi::CString;
use std::fs;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::fcntl::AtFlags;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{fchownat, Gid, Uid};
use sha2::{Digest, Sha256};

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Why a layer could not be unpacked; the caller adds which layer and image.
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("entry {path:?} would land outside the layer directory")]
    UnsafePath { path: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> UnpackError {
    let what = what.into();
    move |source| UnpackError::Io { what, source }
}

fn nix_err(what: impl Into<String>) -> impl FnOnce(nix::Error) -> UnpackError {
    let what = what.into();
    move |e| UnpackError::Io {
        what,
        source: io::Error::from(e),
    }
}

/// Passes bytes through while hashing them, so one read of a layer both unpacks it
/// and yields its diff-id.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    bytes: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// `sha256:<hex>` of everything read, and how many bytes that was.
    pub fn finish(self) -> (String, u64) {
        (
            format!("sha256:{}", hex::encode(self.hasher.finalize())),
            self.bytes,
        )
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Unpacks the layer in `blob` (gzip detected by its magic bytes) into `dest`, which must
/// exist and be empty. Returns the `sha256:` digest of the uncompressed tar (the diff-id).
pub fn unpack_layer(blob: &Path, dest: &Path) -> Result<String, UnpackError> {
    let file = fs::File::open(blob).map_err(io_err(format!("opening {}", blob.display())))?;
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let head = reader
        .fill_buf()
        .map_err(io_err(format!("reading {}", blob.display())))?;
    let gzipped = head.starts_with(&[0x1f, 0x8b]);
    let stream: Box<dyn Read> = if gzipped {
        Box::new(flate2::bufread::MultiGzDecoder::new(reader))
    } else {
        Box::new(reader)
    };
    unpack_stream(stream, dest)
}

/// Unpacks an uncompressed tar stream into `dest`; see [`unpack_layer`].
pub fn unpack_stream(stream: impl Read, dest: &Path) -> Result<String, UnpackError> {
    let mut archive = tar::Archive::new(HashingReader::new(stream));
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(true);
    archive.set_preserve_mtime(true);
    archive.set_unpack_xattrs(true);
    archive.set_overwrite(true);
    let entries = archive.entries().map_err(io_err("reading the layer tar"))?;
    for entry in entries {
        let mut entry = entry.map_err(io_err("reading the layer tar"))?;
        unpack_entry(&mut entry, dest)?;
    }
    let mut rest = archive.into_inner();
    // The tar's end-of-archive padding is part of the diff-id.
    io::copy(&mut rest, &mut io::sink()).map_err(io_err("reading the layer tar"))?;
    Ok(rest.finish().0)
}

fn unpack_entry<R: Read>(entry: &mut tar::Entry<'_, R>, dest: &Path) -> Result<(), UnpackError> {
    let raw_path = entry.path().map_err(io_err("reading an entry's path"))?;
    let display = raw_path.display().to_string();
    let rel = safe_relative(&raw_path).ok_or_else(|| UnpackError::UnsafePath {
        path: display.clone(),
    })?;
    let Some(name) = rel.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(()); // the layer's root itself ("./")
    };
    let parent_rel = rel.parent().unwrap_or(Path::new(""));
    let kind = entry.header().entry_type();

    if name == OPAQUE_WHITEOUT {
        let dir = ensure_dir_inside(dest, parent_rel, &display)?;
        return set_xattr(&dir, OVERLAY_OPAQUE_XATTR, b"y");
    }
    if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.starts_with(WHITEOUT_PREFIX) {
            return Ok(()); // other AUFS metadata (.wh..wh.plnk …) means nothing to overlayfs
        }
        let dir = ensure_dir_inside(dest, parent_rel, &display)?;
        let target = dir.join(hidden);
        remove_existing(&target)?;
        return make_node(&target, SFlag::S_IFCHR, 0o000, 0, 0);
    }
    if kind.is_character_special() || kind.is_block_special() || kind.is_fifo() {
        // The tar crate would write these as regular files.
        let dir = ensure_dir_inside(dest, parent_rel, &display)?;
        let target = dir.join(&name);
        remove_existing(&target)?;
        let header = entry.header();
        let flag = if kind.is_character_special() {
            SFlag::S_IFCHR
        } else if kind.is_block_special() {
            SFlag::S_IFBLK
        } else {
            SFlag::S_IFIFO
        };
        let mode = header.mode().unwrap_or(0o600) & 0o7777;
        let major = header.device_major().ok().flatten().unwrap_or(0);
        let minor = header.device_minor().ok().flatten().unwrap_or(0);
        make_node(&target, flag, mode, major, minor)?;
        let uid = header.uid().unwrap_or(0) as u32;
        let gid = header.gid().unwrap_or(0) as u32;
        return fchownat(
            None,
            &target,
            Some(Uid::from_raw(uid)),
            Some(Gid::from_raw(gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(nix_err(format!("chown {}", target.display())));
    }
    // The tar crate refuses to follow a symlinked parent out of `dest` and checks
    // hard-link targets; `safe_relative` already refused `..`.
    let unpacked = entry
        .unpack_in(dest)
        .map_err(io_err(format!("unpacking {display:?}")))?;
    if !unpacked {
        return Err(UnpackError::UnsafePath { path: display });
    }
    Ok(())
}

/// The entry's path relative to the layer root, or `None` if it climbs out with `..`.
fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

/// Creates `dest/rel` if needed, one component at a time, refusing to follow a symlink
/// (left by an earlier entry) out of `dest` before anything is created there.
fn ensure_dir_inside(dest: &Path, rel: &Path, entry: &str) -> Result<PathBuf, UnpackError> {
    let unsafe_path = || UnpackError::UnsafePath {
        path: entry.to_string(),
    };
    let root = fs::canonicalize(dest).map_err(io_err(format!("resolving {}", dest.display())))?;
    let mut current = root.clone();
    for part in rel.components() {
        let next = current.join(part);
        match fs::symlink_metadata(&next) {
            Ok(m) if m.is_dir() => current = next,
            Ok(m) if m.file_type().is_symlink() => {
                let resolved = fs::canonicalize(&next)
                    .map_err(io_err(format!("resolving {}", next.display())))?;
                if !resolved.starts_with(&root) || !resolved.is_dir() {
                    return Err(unsafe_path());
                }
                current = resolved;
            }
            Ok(_) => {
                return Err(UnpackError::Io {
                    what: format!("{entry:?} needs {} to be a directory", next.display()),
                    source: io::Error::from(io::ErrorKind::NotADirectory),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                fs::create_dir(&next).map_err(io_err(format!("creating {}", next.display())))?;
                current = next;
            }
            Err(e) => return Err(io_err(format!("inspecting {}", next.display()))(e)),
        }
    }
    Ok(current)
}

fn remove_existing(path: &Path) -> Result<(), UnpackError> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            fs::remove_dir_all(path).map_err(io_err(format!("removing {}", path.display())))
        }
        Ok(_) => fs::remove_file(path).map_err(io_err(format!("removing {}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err(format!("inspecting {}", path.display()))(e)),
    }
}

fn make_node(
    path: &Path,
    kind: SFlag,
    mode: u32,
    major: u32,
    minor: u32,
) -> Result<(), UnpackError> {
    mknod(
        path,
        kind,
        Mode::from_bits_truncate(mode),
        makedev(u64::from(major), u64::from(minor)),
    )
    .map_err(nix_err(format!("mknod {}", path.display())))
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<(), UnpackError> {
    let what = || format!("setting {name} on {}", path.display());
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io_err(what())(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let c_name = CString::new(name)
        .map_err(|e| io_err(what())(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    // SAFETY: both strings are NUL-terminated and live across the call; `value` is a
    // valid slice of the length passed.
    let rc = unsafe {
        libc::lsetxattr(
            c_path.as_ptr(),
            c_name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc != 0 {
        return Err(io_err(what())(io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, MetadataExt};

    fn tar_with(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, kind, data, link) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*kind);
            h.set_size(data.len() as u64);
            h.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
            h.set_uid(1000);
            h.set_gid(1000);
            if let Some(link) = link {
                h.set_link_name(link).unwrap();
            }
            // Bypass the builder's own path checks so that hostile paths can be tested.
            let name = h.as_old_mut().name.as_mut();
            name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_cksum();
            b.append(&h, *data).unwrap();
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_with(&[
            ("etc/", tar::EntryType::Directory, b"", None),
            ("etc/.wh.passwd", tar::EntryType::Regular, b"", None),
            ("var/.wh..wh..opq", tar::EntryType::Regular, b"", None),
            ("var/keep", tar::EntryType::Regular, b"kept", None),
            (".wh..wh.plnk", tar::EntryType::Regular, b"", None),
        ]);
        let digest = unpack_stream(&tar[..], dir.path()).unwrap();
        assert_eq!(
            digest,
            format!("sha256:{}", hex::encode(Sha256::digest(&tar)))
        );

        let whiteout = fs::symlink_metadata(dir.path().join("etc/passwd")).unwrap();
        assert!(whiteout.file_type().is_char_device());
        assert_eq!(whiteout.rdev(), 0);
        assert!(!dir.path().join("etc/.wh.passwd").exists());
        assert!(!dir.path().join(".wh..wh.plnk").exists());

        let var = CString::new(dir.path().join("var").as_os_str().as_bytes()).unwrap();
        let name = CString::new(OVERLAY_OPAQUE_XATTR).unwrap();
        let mut buf = [0u8; 4];
        // SAFETY: valid C strings and a buffer of the length passed.
        let n = unsafe { libc::lgetxattr(var.as_ptr(), name.as_ptr(), buf.as_mut_ptr().cast(), 4) };
        assert_eq!(n, 1, "opaque xattr missing: {}", io::Error::last_os_error());
        assert_eq!(&buf[..1], b"y");
        assert_eq!(fs::read(dir.path().join("var/keep")).unwrap(), b"kept");
    }

    #[test]
    fn ownership_symlinks_and_hardlinks_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_with(&[
            ("bin/", tar::EntryType::Directory, b"", None),
            ("bin/busybox", tar::EntryType::Regular, b"elf", None),
            ("bin/sh", tar::EntryType::Symlink, b"", Some("busybox")),
            ("bin/ash", tar::EntryType::Link, b"", Some("bin/busybox")),
        ]);
        unpack_stream(&tar[..], dir.path()).unwrap();
        let bb = fs::metadata(dir.path().join("bin/busybox")).unwrap();
        assert_eq!((bb.uid(), bb.gid(), bb.mode() & 0o777), (1000, 1000, 0o644));
        assert_eq!(
            fs::read_link(dir.path().join("bin/sh")).unwrap(),
            Path::new("busybox")
        );
        assert_eq!(
            fs::metadata(dir.path().join("bin/ash")).unwrap().ino(),
            bb.ino()
        );
    }

    #[test]
    fn paths_escaping_the_layer_are_refused() {
        for tar in [
            tar_with(&[("../evil", tar::EntryType::Regular, b"x", None)]),
            tar_with(&[
                ("up", tar::EntryType::Symlink, b"", Some("/")),
                ("up/tmp/.wh.x", tar::EntryType::Regular, b"", None),
            ]),
            tar_with(&[("l", tar::EntryType::Link, b"", Some("../../etc/passwd"))]),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let err = unpack_stream(&tar[..], &dir.path().join("")).unwrap_err();
            let text = format!("{err}: {:?}", std::error::Error::source(&err));
            assert!(
                matches!(err, UnpackError::UnsafePath { .. }) || text.contains("outside"),
                "{text}"
            );
        }
    }
}
