//! The kinds the CLI knows, the names kubectl accepts for them (`pods`, `pod`, `po`,
//! `deploy`, `deployment.apps`, …), their REST paths, and the `KIND NAME…` /
//! `KIND/NAME…` argument forms.

use punnet_api::{
    ConfigMap, DaemonSet, Deployment, Job, Namespace, Node, Object, Pod, ReplicaSet, Resource,
    Secret,
};

use crate::client::Segments;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Pod,
    Deployment,
    Node,
    ConfigMap,
    Secret,
    DaemonSet,
    Job,
    Namespace,
    ReplicaSet,
}

impl Kind {
    /// Accepts kubectl's names for the kind in any case.
    pub fn parse(name: &str) -> Result<Kind> {
        match name.to_ascii_lowercase().as_str() {
            "pods" | "pod" | "po" => Ok(Kind::Pod),
            "deployments" | "deployment" | "deploy" | "deployments.apps" | "deployment.apps"
            | "deploy.apps" => Ok(Kind::Deployment),
            "nodes" | "node" | "no" => Ok(Kind::Node),
            "configmaps" | "configmap" | "cm" => Ok(Kind::ConfigMap),
            "secrets" | "secret" => Ok(Kind::Secret),
            "daemonsets" | "daemonset" | "ds" | "daemonsets.apps" | "daemonset.apps"
            | "ds.apps" => Ok(Kind::DaemonSet),
            "jobs" | "job" | "jobs.batch" | "job.batch" => Ok(Kind::Job),
            "namespaces" | "namespace" | "ns" => Ok(Kind::Namespace),
            "replicasets" | "replicaset" | "rs" | "replicasets.apps" | "replicaset.apps"
            | "rs.apps" => Ok(Kind::ReplicaSet),
            _ => Err(Error::Usage(format!(
                "the server doesn't have a resource type {name:?}"
            ))),
        }
    }

    pub fn of(object: &Object) -> Kind {
        match object {
            Object::Pod(_) => Kind::Pod,
            Object::Deployment(_) => Kind::Deployment,
            Object::Node(_) => Kind::Node,
            Object::ConfigMap(_) => Kind::ConfigMap,
            Object::Secret(_) => Kind::Secret,
            Object::DaemonSet(_) => Kind::DaemonSet,
            Object::Job(_) => Kind::Job,
            Object::Namespace(_) => Kind::Namespace,
            Object::ReplicaSet(_) => Kind::ReplicaSet,
        }
    }

    pub fn kind(self) -> &'static str {
        match self {
            Kind::Pod => Pod::KIND,
            Kind::Deployment => Deployment::KIND,
            Kind::Node => Node::KIND,
            Kind::ConfigMap => ConfigMap::KIND,
            Kind::Secret => Secret::KIND,
            Kind::DaemonSet => DaemonSet::KIND,
            Kind::Job => Job::KIND,
            Kind::Namespace => Namespace::KIND,
            Kind::ReplicaSet => ReplicaSet::KIND,
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::Pod => Pod::API_VERSION,
            Kind::Deployment => Deployment::API_VERSION,
            Kind::Node => Node::API_VERSION,
            Kind::ConfigMap => ConfigMap::API_VERSION,
            Kind::Secret => Secret::API_VERSION,
            Kind::DaemonSet => DaemonSet::API_VERSION,
            Kind::Job => Job::API_VERSION,
            Kind::Namespace => Namespace::API_VERSION,
            Kind::ReplicaSet => ReplicaSet::API_VERSION,
        }
    }

    pub fn plural(self) -> &'static str {
        match self {
            Kind::Pod => Pod::PLURAL,
            Kind::Deployment => Deployment::PLURAL,
            Kind::Node => Node::PLURAL,
            Kind::ConfigMap => ConfigMap::PLURAL,
            Kind::Secret => Secret::PLURAL,
            Kind::DaemonSet => DaemonSet::PLURAL,
            Kind::Job => Job::PLURAL,
            Kind::Namespace => Namespace::PLURAL,
            Kind::ReplicaSet => ReplicaSet::PLURAL,
        }
    }

    pub fn namespaced(self) -> bool {
        match self {
            Kind::Pod => Pod::NAMESPACED,
            Kind::Deployment => Deployment::NAMESPACED,
            Kind::Node => Node::NAMESPACED,
            Kind::ConfigMap => ConfigMap::NAMESPACED,
            Kind::Secret => Secret::NAMESPACED,
            Kind::DaemonSet => DaemonSet::NAMESPACED,
            Kind::Job => Job::NAMESPACED,
            Kind::Namespace => Namespace::NAMESPACED,
            Kind::ReplicaSet => ReplicaSet::NAMESPACED,
        }
    }

    /// `pod`, `deployment.apps`, `node`: how kubectl names the kind in `KIND/NAME` output.
    pub fn singular(self) -> String {
        let kind = self.kind().to_ascii_lowercase();
        match group(self.api_version()) {
            Some(g) => format!("{kind}.{g}"),
            None => kind,
        }
    }

    /// `pod/web`, `deployment.apps/web`.
    pub fn reference(self, name: &str) -> String {
        format!("{}/{name}", self.singular())
    }

    /// The collection path; `namespace` is ignored for cluster-scoped kinds and `None`
    /// means every namespace.
    pub fn collection(self, namespace: Option<&str>) -> Segments {
        let mut segs: Segments = match group(self.api_version()) {
            None => vec!["api".into(), self.api_version().into()],
            Some(_) => {
                let mut v = vec!["apis".to_string()];
                v.extend(self.api_version().split('/').map(String::from));
                v
            }
        };
        if let (true, Some(ns)) = (self.namespaced(), namespace) {
            segs.extend(["namespaces".to_string(), ns.to_string()]);
        }
        segs.push(self.plural().into());
        segs
    }

    pub fn object(self, namespace: &str, name: &str) -> Segments {
        let mut segs = self.collection(Some(namespace));
        segs.push(name.to_string());
        segs
    }
}

fn group(api_version: &str) -> Option<&str> {
    api_version.split_once('/').map(|(g, _)| g)
}

/// What a `get`/`describe`/`delete` command line names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Targets {
    /// `get pods [NAME…]`; no names means the whole collection.
    Kind { kind: Kind, names: Vec<String> },
    /// `get pod/a deploy/b`.
    Named(Vec<(Kind, String)>),
}

impl Targets {
    pub fn parse(resource: &str, rest: &[String]) -> Result<Targets> {
        if !resource.contains('/') {
            let kind = Kind::parse(resource)?;
            if let Some(bad) = rest.iter().find(|n| n.contains('/')) {
                return Err(Error::Usage(format!(
                    "there is no need to specify a resource type as a separate argument when \
                     passing arguments in resource/name form (e.g. '{bad}')"
                )));
            }
            return Ok(Targets::Kind {
                kind,
                names: rest.to_vec(),
            });
        }
        let mut named = Vec::new();
        for arg in std::iter::once(resource).chain(rest.iter().map(String::as_str)) {
            named.push(parse_reference(arg)?);
        }
        Ok(Targets::Named(named))
    }

    /// Every `(kind, name)` pair, or `None` when the whole collection is meant.
    pub fn pairs(&self) -> Option<Vec<(Kind, String)>> {
        match self {
            Targets::Kind { names, .. } if names.is_empty() => None,
            Targets::Kind { kind, names } => {
                Some(names.iter().map(|n| (*kind, n.clone())).collect())
            }
            Targets::Named(pairs) => Some(pairs.clone()),
        }
    }
}

/// `KIND/NAME`.
pub fn parse_reference(arg: &str) -> Result<(Kind, String)> {
    match arg.split_once('/') {
        Some((kind, name)) if !kind.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((Kind::parse(kind)?, name.to_string()))
        }
        _ => Err(Error::Usage(format!(
            "arguments in resource/name form must have a single resource and name, got {arg:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_and_paths() {
        for alias in ["pods", "pod", "po", "Pod"] {
            assert_eq!(Kind::parse(alias).unwrap(), Kind::Pod);
        }
        for alias in ["deployments", "deploy", "deployment.apps"] {
            assert_eq!(Kind::parse(alias).unwrap(), Kind::Deployment);
        }
        assert_eq!(Kind::parse("no").unwrap(), Kind::Node);
        assert_eq!(
            Kind::parse("foo").unwrap_err().to_string(),
            r#"the server doesn't have a resource type "foo""#
        );
        assert_eq!(
            Kind::Deployment.object("default", "web").join("/"),
            "apis/apps/v1/namespaces/default/deployments/web"
        );
        assert_eq!(Kind::Pod.collection(None).join("/"), "api/v1/pods");
        assert_eq!(
            Kind::Node.collection(Some("ignored")).join("/"),
            "api/v1/nodes"
        );
        assert_eq!(Kind::Deployment.reference("web"), "deployment.apps/web");
        assert_eq!(Kind::Pod.reference("x"), "pod/x");
    }

    #[test]
    fn target_forms() {
        let t = Targets::parse("deploy/web", &["po/x".into()]).unwrap();
        assert_eq!(
            t.pairs().unwrap(),
            vec![(Kind::Deployment, "web".into()), (Kind::Pod, "x".into())]
        );
        assert_eq!(Targets::parse("pods", &[]).unwrap().pairs(), None);
        assert!(Targets::parse("pods", &["pod/x".into()]).is_err());
        assert!(Targets::parse("pod/", &[]).is_err());
    }
}
