//! Which ConfigMaps and Secrets a Pod needs on its node: those named by its volumes,
//! by its containers' (and init containers') `env[].valueFrom` and `envFrom`, and by
//! `imagePullSecrets`. Always in the Pod's own namespace, as in Kubernetes.

use std::collections::BTreeSet;

use punnet_api::{Container, Pod};

/// Names (not keys) of the objects one Pod references.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Refs {
    pub config_maps: BTreeSet<String>,
    pub secrets: BTreeSet<String>,
}

impl Refs {
    pub fn of(pod: &Pod) -> Refs {
        let mut r = Refs::default();
        for v in &pod.spec.volumes {
            if let Some(c) = &v.config_map {
                r.config_maps.insert(c.name.clone());
            }
            if let Some(s) = &v.secret {
                r.secrets.insert(s.secret_name.clone());
            }
        }
        for s in &pod.spec.image_pull_secrets {
            r.secrets.insert(s.name.clone());
        }
        for c in pod.spec.init_containers.iter().chain(&pod.spec.containers) {
            r.add_container(c);
        }
        r.config_maps.retain(|n| !n.is_empty());
        r.secrets.retain(|n| !n.is_empty());
        r
    }

    fn add_container(&mut self, c: &Container) {
        for e in &c.env {
            let Some(from) = &e.value_from else { continue };
            if let Some(k) = &from.config_map_key_ref {
                self.config_maps.insert(k.name.clone());
            }
            if let Some(k) = &from.secret_key_ref {
                self.secrets.insert(k.name.clone());
            }
        }
        for e in &c.env_from {
            if let Some(r) = &e.config_map_ref {
                self.config_maps.insert(r.name.clone());
            }
            if let Some(r) = &e.secret_ref {
                self.secrets.insert(r.name.clone());
            }
        }
    }
}

/// `namespace/name` keys of what `pod` references, as the store keys them.
pub fn keys(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let ns = pod.metadata.namespace_or_default();
    let r = Refs::of(pod);
    let key = |n: String| format!("{ns}/{n}");
    (
        r.config_maps.into_iter().map(key).collect(),
        r.secrets.into_iter().map(key).collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::manifest::parse;
    use punnet_api::Object;

    #[test]
    fn every_kind_of_reference_is_found() {
        let yaml = r#"
apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop}
spec:
  imagePullSecrets: [{name: regcred}]
  volumes:
  - {name: conf, configMap: {name: web-conf}}
  - {name: tls, secret: {secretName: web-tls}}
  - {name: scratch, emptyDir: {}}
  initContainers:
  - name: init
    image: busybox
    envFrom: [{configMapRef: {name: init-env}}]
  containers:
  - name: web
    image: nginx
    env:
    - {name: A, value: plain}
    - {name: B, valueFrom: {configMapKeyRef: {name: web-env, key: b}}}
    - {name: C, valueFrom: {secretKeyRef: {name: db, key: password}}}
    - {name: D, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
    envFrom: [{secretRef: {name: api-keys}, prefix: API_}]
"#;
        let Object::Pod(pod) = parse(yaml).unwrap().remove(0) else {
            panic!("a Pod")
        };
        let r = Refs::of(&pod);
        let names = |s: &BTreeSet<String>| s.iter().cloned().collect::<Vec<_>>();
        assert_eq!(names(&r.config_maps), ["init-env", "web-conf", "web-env"]);
        assert_eq!(names(&r.secrets), ["api-keys", "db", "regcred", "web-tls"]);
        let (cms, _) = keys(&pod);
        assert!(cms.contains("shop/web-conf"));
        assert_eq!(Refs::of(&Pod::default()), Refs::default());
    }
}
