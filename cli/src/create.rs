//! `punnet create secret docker-registry|generic` and `punnet create configmap`, as
//! kubectl has them: the object is built here from literals and files (pure functions,
//! tested without a server), validated, then created with a POST.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use punnet_api::configdata::{DOCKER_CONFIG_JSON_KEY, SECRET_TYPE_DOCKER_CONFIG_JSON};
use punnet_api::{ConfigMap, Namespace, Object, Resource, Secret};
use serde_json::json;

use crate::args::{CreateCommand, CreateSecret, DockerRegistryArgs, FromSources, OutputFormat};
use crate::error::{Error, Result};
use crate::get::write_json;
use crate::kinds::Kind;
use crate::Ctx;

pub async fn create(ctx: &Ctx, cmd: &CreateCommand, out: &mut dyn Write) -> Result<()> {
    let (object, dry_run, output) = match cmd {
        CreateCommand::Secret(CreateSecret::DockerRegistry(a)) => (
            Object::Secret(docker_registry_secret(a, &ctx.namespace)?),
            &a.dry_run,
            a.output,
        ),
        CreateCommand::Secret(CreateSecret::Generic(a)) => (
            Object::Secret(generic_secret(&a.name, &ctx.namespace, &read_sources(a)?)),
            &a.dry_run,
            a.output,
        ),
        CreateCommand::Configmap(a) => (
            Object::ConfigMap(config_map(&a.name, &ctx.namespace, &read_sources(a)?)),
            &a.dry_run,
            a.output,
        ),
        CreateCommand::Namespace(a) => {
            (Object::Namespace(namespace(&a.name)), &a.dry_run, a.output)
        }
    };
    punnet_api::validate::validate(&object).map_err(|source| Error::Invalid {
        file: "command line".into(),
        source,
    })?;
    let kind = Kind::of(&object);
    let dry = match dry_run.as_deref() {
        None | Some("none") => false,
        Some("client") => true,
        Some(other) => {
            return Err(Error::Usage(format!(
                "--dry-run {other:?} is not supported: use client or none"
            )))
        }
    };
    let shown = if dry {
        object.to_json()
    } else {
        let path = kind.collection(Some(&ctx.namespace));
        ctx.client.post(&path, &object.to_json()).await?
    };
    match output {
        Some(OutputFormat::Json) => write_json(out, &shown),
        Some(OutputFormat::Yaml) => {
            let text = serde_norway::to_string(&shown)
                .map_err(|e| Error::decode("the object as YAML", e))?;
            out.write_all(text.as_bytes())?;
            Ok(())
        }
        Some(OutputFormat::Name) => {
            writeln!(out, "{}", kind.reference(&object.meta().name))?;
            Ok(())
        }
        _ => {
            let suffix = if dry { " (dry run)" } else { "" };
            writeln!(
                out,
                "{} created{suffix}",
                kind.reference(&object.meta().name)
            )?;
            Ok(())
        }
    }
}

/// A Namespace as `kubectl create namespace` sends it.
pub fn namespace(name: &str) -> Namespace {
    let mut ns = Namespace::default();
    ns.metadata.name = name.to_string();
    ns.set_type_meta();
    ns
}

/// Keys and bytes from `--from-literal` and `--from-file`, in the order given; a key
/// given twice is an error, as in kubectl.
fn read_sources(a: &FromSources) -> Result<BTreeMap<String, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut add = |key: String, value: Vec<u8>| -> Result<()> {
        if out.insert(key.clone(), value).is_some() {
            return Err(Error::Usage(format!(
                "cannot add key {key:?}: another key by that name already exists"
            )));
        }
        Ok(())
    };
    for lit in &a.literals {
        let (k, v) = parse_literal(lit)?;
        add(k, v.into_bytes())?;
    }
    for spec in &a.files {
        for (k, path) in file_sources(spec)? {
            let bytes = std::fs::read(&path).map_err(|source| Error::Read {
                path: path.clone(),
                source,
            })?;
            add(k, bytes)?;
        }
    }
    Ok(out)
}

/// `KEY=VALUE` (the value may contain `=`).
pub fn parse_literal(text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(Error::Usage(format!(
            "invalid literal source {text:?}, expected key=value"
        ))),
    }
}

/// `[KEY=]PATH` as (key, file) pairs: a directory gives each regular file in it, under
/// its own name.
fn file_sources(spec: &str) -> Result<Vec<(String, String)>> {
    let (key, path) = match spec.split_once('=') {
        Some((k, p)) if !k.is_empty() => (Some(k.to_string()), p),
        _ => (None, spec),
    };
    let p = Path::new(path);
    if p.is_dir() {
        if key.is_some() {
            return Err(Error::Usage(format!(
                "cannot give a key for the directory {path:?}: its files are keyed by their names"
            )));
        }
        let read_err = |source| Error::Read {
            path: path.to_string(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(p).map_err(read_err)? {
            let entry = entry.map_err(read_err)?;
            if entry.file_type().map_err(read_err)?.is_file() {
                files.push((
                    entry.file_name().to_string_lossy().into_owned(),
                    entry.path().display().to_string(),
                ));
            }
        }
        files.sort();
        return Ok(files);
    }
    let name = key.unwrap_or_else(|| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    });
    Ok(vec![(name, path.to_string())])
}

fn named<T: Resource + Default>(name: &str, namespace: &str) -> T {
    let mut obj = T::default();
    obj.meta_mut().name = name.to_string();
    obj.meta_mut().namespace = Some(namespace.to_string());
    obj.set_type_meta();
    obj
}

/// Text values go to `data`, anything not UTF-8 to `binaryData`.
pub fn config_map(name: &str, namespace: &str, entries: &BTreeMap<String, Vec<u8>>) -> ConfigMap {
    let mut c: ConfigMap = named(name, namespace);
    for (k, v) in entries {
        match std::str::from_utf8(v) {
            Ok(text) => {
                c.data.insert(k.clone(), text.to_string());
            }
            Err(_) => {
                c.binary_data.insert(k.clone(), STANDARD.encode(v));
            }
        }
    }
    c
}

pub fn generic_secret(name: &str, namespace: &str, entries: &BTreeMap<String, Vec<u8>>) -> Secret {
    let mut s: Secret = named(name, namespace);
    s.type_ = Some("Opaque".into());
    for (k, v) in entries {
        s.data.insert(k.clone(), STANDARD.encode(v));
    }
    s
}

/// A `kubernetes.io/dockerconfigjson` Secret holding a docker `config.json` with one
/// registry's credentials (and the `auth` field clients read: base64 of `user:password`).
pub fn docker_registry_secret(a: &DockerRegistryArgs, namespace: &str) -> Result<Secret> {
    let mut entry = json!({
        "username": a.docker_username,
        "password": a.docker_password,
        "auth": STANDARD.encode(format!("{}:{}", a.docker_username, a.docker_password)),
    });
    if let Some(email) = &a.docker_email {
        entry["email"] = json!(email);
    }
    let config = json!({"auths": {a.docker_server.clone(): entry}});
    let mut s: Secret = named(&a.name, namespace);
    s.type_ = Some(SECRET_TYPE_DOCKER_CONFIG_JSON.into());
    let text = serde_json::to_string(&config).map_err(|e| Error::decode("config.json", e))?;
    s.data
        .insert(DOCKER_CONFIG_JSON_KEY.into(), STANDARD.encode(text));
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(s: &str) -> Vec<u8> {
        STANDARD.decode(s).unwrap()
    }

    #[test]
    fn docker_registry_secret_holds_a_config_json() {
        let a = DockerRegistryArgs {
            name: "regcred".into(),
            docker_server: "registry.lan:5000".into(),
            docker_username: "pi".into(),
            docker_password: "s3cret".into(),
            docker_email: Some("pi@example.com".into()),
            dry_run: None,
            output: None,
        };
        let s = docker_registry_secret(&a, "default").unwrap();
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/dockerconfigjson"));
        let config: serde_json::Value =
            serde_json::from_slice(&decode(&s.data[".dockerconfigjson"])).unwrap();
        let entry = &config["auths"]["registry.lan:5000"];
        assert_eq!(entry["username"], "pi");
        assert_eq!(entry["email"], "pi@example.com");
        assert_eq!(decode(entry["auth"].as_str().unwrap()), b"pi:s3cret");
        assert!(punnet_api::validate::validate_secret(&s).is_ok());
    }

    #[test]
    fn sources_from_literals_files_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.conf"), "port=80\n").unwrap();
        std::fs::write(dir.path().join("logo.bin"), [0xff, 0x00]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let d = dir.path().display().to_string();
        let a = FromSources {
            name: "web".into(),
            literals: vec!["mode=a=b".into()],
            files: vec![d.clone(), format!("renamed={d}/app.conf")],
            dry_run: None,
            output: None,
        };
        let entries = read_sources(&a).unwrap();
        let keys: Vec<&str> = entries.keys().map(String::as_str).collect();
        assert_eq!(keys, ["app.conf", "logo.bin", "mode", "renamed"]);
        assert_eq!(entries["mode"], b"a=b");
        let c = config_map("web", "default", &entries);
        assert_eq!(c.data["app.conf"], "port=80\n");
        assert_eq!(c.binary_data["logo.bin"], "/wA=");
        let s = generic_secret("web", "default", &entries);
        assert_eq!(decode(&s.data["renamed"]), b"port=80\n");

        let dup = FromSources {
            literals: vec!["k=1".into(), "k=2".into()],
            files: vec![],
            ..a
        };
        assert!(read_sources(&dup).is_err());
        assert!(parse_literal("novalue").is_err());
        assert!(parse_literal("=x").is_err());
    }
}
