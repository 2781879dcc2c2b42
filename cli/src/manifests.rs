//! Reading `-f` arguments for apply and delete: files, directories (every `.yaml`,
//! `.yml` and `.json` in them, sorted) and `-` for stdin; parsing them with
//! `punnet_api::manifest`, giving each object its namespace, and validating, all before
//! any request so bad input changes nothing.

use std::io::Read;
use std::path::{Path, PathBuf};

use punnet_api::validate::validate;
use punnet_api::{Object, DEFAULT_NAMESPACE};

use crate::error::{Error, Result};
use crate::kinds::Kind;

/// One object and the file it came from (for messages).
#[derive(Debug, Clone, PartialEq)]
pub struct Loaded {
    pub file: String,
    pub object: Object,
}

/// Reads, parses and namespaces every object; validates them when `check` is set.
/// `namespace_flag` is `-n` as given (not its default).
pub fn load(args: &[String], namespace_flag: Option<&str>, check: bool) -> Result<Vec<Loaded>> {
    let mut loaded = Vec::new();
    for (file, text) in read_all(args, &mut std::io::stdin())? {
        let objects = punnet_api::manifest::parse(&text).map_err(|source| Error::Manifest {
            file: file.clone(),
            source,
        })?;
        for mut object in objects {
            set_namespace(&mut object, namespace_flag).map_err(|message| {
                Error::Usage(format!("{file}: {}: {message}", object.describe()))
            })?;
            if check {
                validate(&object).map_err(|source| Error::Invalid {
                    file: file.clone(),
                    source,
                })?;
            }
            loaded.push(Loaded {
                file: file.clone(),
                object,
            });
        }
    }
    Ok(loaded)
}

/// `(name to show, text)` for every manifest the arguments name.
pub fn read_all(args: &[String], stdin: &mut dyn Read) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for arg in args {
        if arg == "-" {
            let mut text = String::new();
            stdin
                .read_to_string(&mut text)
                .map_err(|source| Error::Read {
                    path: "<stdin>".into(),
                    source,
                })?;
            out.push(("<stdin>".to_string(), text));
            continue;
        }
        let path = Path::new(arg);
        let read_err = |source| Error::Read {
            path: arg.clone(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        if meta.is_dir() {
            for file in manifest_files(path).map_err(read_err)? {
                let text = std::fs::read_to_string(&file).map_err(|source| Error::Read {
                    path: file.display().to_string(),
                    source,
                })?;
                out.push((file.display().to_string(), text));
            }
        } else {
            out.push((
                arg.clone(),
                std::fs::read_to_string(path).map_err(read_err)?,
            ));
        }
    }
    Ok(out)
}

/// The manifests directly in `dir` (not in subdirectories, as kubectl without `-R`).
fn manifest_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let is_manifest = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e, "yaml" | "yml" | "json"));
        if is_manifest && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// The object's own namespace, else `-n`, else `default`; an object that names another
/// namespace than `-n` is refused, as kubectl does. Cluster-scoped kinds are left alone
/// (validation reports a namespace set on them).
pub fn set_namespace(object: &mut Object, namespace_flag: Option<&str>) -> Result<(), String> {
    if !Kind::of(object).namespaced() {
        return Ok(());
    }
    let meta = object.meta_mut();
    match (meta.namespace.as_deref(), namespace_flag) {
        (Some(own), Some(flag)) if own != flag => Err(format!(
            "the namespace from the provided object {own:?} does not match the namespace {flag:?}. \
             You must pass '--namespace={own}' to perform this operation."
        )),
        (Some(_), _) => Ok(()),
        (None, flag) => {
            meta.namespace = Some(flag.unwrap_or(DEFAULT_NAMESPACE).to_string());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POD: &str = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec:\n  containers: [{name: c, image: busybox}]\n";

    #[test]
    fn namespaces_follow_kubectl() {
        let mut obj = punnet_api::manifest::parse(POD).unwrap().remove(0);
        set_namespace(&mut obj, None).unwrap();
        assert_eq!(obj.meta().namespace.as_deref(), Some("default"));
        assert!(set_namespace(&mut obj, Some("default")).is_ok());
        let err = set_namespace(&mut obj, Some("other")).unwrap_err();
        assert!(
            err.starts_with("the namespace from the provided object \"default\" does not match"),
            "{err}"
        );
        let mut obj = punnet_api::manifest::parse(POD).unwrap().remove(0);
        set_namespace(&mut obj, Some("tools")).unwrap();
        assert_eq!(obj.meta().namespace.as_deref(), Some("tools"));
        let mut node =
            punnet_api::manifest::parse("apiVersion: v1\nkind: Node\nmetadata: {name: pi-1}\n")
                .unwrap()
                .remove(0);
        set_namespace(&mut node, Some("tools")).unwrap();
        assert_eq!(node.meta().namespace, None);
    }

    #[test]
    fn directories_are_read_sorted_and_filtered() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("b.yml"), "b").unwrap();
        std::fs::write(dir.path().join("a.json"), "a").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "x").unwrap();
        std::fs::create_dir(dir.path().join("sub.yaml")).unwrap();
        let arg = dir.path().to_string_lossy().into_owned();
        let texts: Vec<String> = read_all(&[arg, "-".into()], &mut "s".as_bytes())
            .unwrap()
            .into_iter()
            .map(|(_, t)| t)
            .collect();
        assert_eq!(texts, ["a", "b", "s"]);
    }

    #[test]
    fn errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.yaml");
        std::fs::write(
            &path,
            format!(
                "{POD}---\napiVersion: v1\nkind: Pod\nmetadata: {{name: b}}\nspec: {{bogus: 1}}\n"
            ),
        )
        .unwrap();
        let arg = path.to_string_lossy().into_owned();
        let err = load(std::slice::from_ref(&arg), None, true).unwrap_err();
        assert!(
            err.to_string()
                .starts_with(&format!("{arg}: document 2: Pod b: unknown field")),
            "{err}"
        );

        std::fs::write(
            &path,
            "apiVersion: v1\nkind: Pod\nmetadata: {name: b}\nspec: {containers: []}\n",
        )
        .unwrap();
        let err = load(std::slice::from_ref(&arg), None, true).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{arg}: Pod default/b: spec.containers: must have at least one container")
        );
        assert_eq!(
            load(&[arg], None, false).unwrap().len(),
            1,
            "delete -f does not validate"
        );
    }
}
