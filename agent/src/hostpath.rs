//! hostPath volumes as Kubernetes defines them: `DirectoryOrCreate` and `FileOrCreate`
//! make what is missing, the other types only check that the path exists and is of the
//! named kind, so a Pod fails to start with a clear message instead of mounting nothing.

use crate::podspec::{HostPathCheck, HostPathType};

/// Kubernetes' hostPath `type` checks.
pub fn prepare(check: &HostPathCheck) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let path = &check.path;
    let shown = path.display();
    let meta = std::fs::metadata(path);
    let kind_ok = |want: &str, ok: fn(&std::fs::FileType) -> bool| match &meta {
        Ok(m) if ok(&m.file_type()) => Ok(()),
        Ok(_) => Err(format!("hostPath {shown} is not a {want}")),
        Err(e) => Err(format!("hostPath {shown}: {e} (type {want} must exist)")),
    };
    match check.type_ {
        HostPathType::Unchecked => Ok(()),
        HostPathType::DirectoryOrCreate => match &meta {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(format!("hostPath {shown} exists and is not a directory")),
            Err(_) => std::fs::create_dir_all(path)
                .map_err(|e| format!("cannot create hostPath directory {shown}: {e}")),
        },
        HostPathType::Directory => kind_ok("directory", |t| t.is_dir()),
        HostPathType::FileOrCreate => match &meta {
            Ok(m) if m.is_file() => Ok(()),
            Ok(_) => Err(format!("hostPath {shown} exists and is not a file")),
            Err(_) => {
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
                }
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map(|_| ())
                    .map_err(|e| format!("cannot create hostPath file {shown}: {e}"))
            }
        },
        HostPathType::File => kind_ok("file", |t| t.is_file()),
        HostPathType::Socket => kind_ok("socket", |t| t.is_socket()),
        HostPathType::CharDevice => kind_ok("character device", |t| t.is_char_device()),
        HostPathType::BlockDevice => kind_ok("block device", |t| t.is_block_device()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn host_path_types() {
        let dir = tempfile::tempdir().unwrap();
        let check = |p: &Path, type_| {
            prepare(&HostPathCheck {
                path: p.to_path_buf(),
                type_,
            })
        };
        let new_dir = dir.path().join("a/b");
        check(&new_dir, HostPathType::DirectoryOrCreate).unwrap();
        assert!(new_dir.is_dir());
        check(&new_dir, HostPathType::Directory).unwrap();
        let missing = dir.path().join("nope");
        assert!(check(&missing, HostPathType::Directory)
            .unwrap_err()
            .contains("must exist"));
        let file = dir.path().join("c/f.txt");
        check(&file, HostPathType::FileOrCreate).unwrap();
        check(&file, HostPathType::File).unwrap();
        assert!(check(&file, HostPathType::Directory)
            .unwrap_err()
            .contains("not a directory"));
        assert!(check(&new_dir, HostPathType::DirectoryOrCreate).is_ok());
        assert!(check(&file, HostPathType::DirectoryOrCreate).is_err());
        check(Path::new("/dev/null"), HostPathType::CharDevice).unwrap();
    }
}
