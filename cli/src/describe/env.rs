//! A container's environment in `describe pod`, worded as kubectl words it: plain
//! values, values taken from ConfigMaps, Secrets and the Pod's own fields, and whole
//! ConfigMaps or Secrets imported with `envFrom`.

use punnet_api::{Container, EnvVar};

use super::Doc;

pub fn describe(d: &mut Doc, level: usize, c: &Container) {
    if !c.env_from.is_empty() {
        d.line(level, "Environment Variables from:");
        for e in &c.env_from {
            let (name, kind, optional) = match (&e.config_map_ref, &e.secret_ref) {
                (Some(r), _) => (&r.name, "ConfigMap", r.optional),
                (None, Some(r)) => (&r.name, "Secret", r.optional),
                (None, None) => continue,
            };
            let kind = match e.prefix.as_deref().filter(|p| !p.is_empty()) {
                Some(p) => format!("{kind} with prefix '{p}'"),
                None => kind.to_string(),
            };
            d.rows(
                level + 1,
                &[vec![
                    name.clone(),
                    kind,
                    format!("Optional: {}", optional.unwrap_or(false)),
                ]],
            );
        }
    }
    if c.env.is_empty() {
        d.field(level, "Environment", "<none>");
        return;
    }
    d.line(level, "Environment:");
    for e in &c.env {
        let mut row = vec![format!("{}:", e.name)];
        row.extend(value(e));
        d.rows(level + 1, &[row]);
    }
}

/// The cells after the name: the value, and whether the source is optional.
fn value(e: &EnvVar) -> Vec<String> {
    let Some(from) = &e.value_from else {
        return vec![e.value.clone().unwrap_or_default()];
    };
    let optional = |o: Option<bool>| format!("Optional: {}", o.unwrap_or(false));
    if let Some(k) = &from.config_map_key_ref {
        return vec![
            format!("<set to the key '{}' of config map '{}'>", k.key, k.name),
            optional(k.optional),
        ];
    }
    if let Some(k) = &from.secret_key_ref {
        return vec![
            format!("<set to the key '{}' in secret '{}'>", k.key, k.name),
            optional(k.optional),
        ];
    }
    if let Some(f) = &from.field_ref {
        return vec![format!(" (v1:{})", f.field_path)];
    }
    vec![String::new()]
}
