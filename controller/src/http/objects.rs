//! The Kubernetes verbs on one kind, generic over `ApiResource`: list, get, create
//! (POST), replace (PUT), delete, and PATCH (dispatched to `apply`). Every write is
//! decoded with unknown fields reported, validated, and made durable (`Store::sync`)
//! before it is acknowledged.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use punnet_api::manifest;
use punnet_api::object::to_json;
use punnet_api::{List, Namespace, Pod, Resource, Time};
use serde_json::Value;

use super::apply;
use super::error::ApiError;
use super::extract::{content_type, parse_body, Body, Params, Target};
use super::kinds::{requested_version, ApiResource};
use super::query::{DeleteParams, ListFilter, ListParams, WriteParams};
use super::{ApiState, ShutdownSignal};
use crate::gc::{self, Propagation};
use crate::store::{Store, StoreError};

/// An object (or list) as the response body, in Kubernetes' JSON form.
pub fn respond<T: serde::Serialize>(code: StatusCode, value: &T) -> Response {
    (code, Json(to_json(value))).into_response()
}

pub async fn list<T: ApiResource>(
    State(state): State<ApiState>,
    target: Target,
    Params(params): Params<ListParams>,
    shutdown: Option<Extension<ShutdownSignal>>,
) -> Result<Response, ApiError> {
    let filter = ListFilter::from_params(&params)?;
    if params.is_watch() {
        let shutdown = shutdown.map(|Extension(s)| s);
        let watch = params.watch_params()?;
        return super::watch::watch::<T>(state, target.namespace, filter, watch, shutdown).await;
    }
    let (items, revision) = state.store.list::<T>(target.namespace.as_deref())?;
    let items: Vec<T> = items
        .into_iter()
        .filter(|o| filter.matches(&o.meta().labels, || to_json(o)))
        .collect();
    Ok(respond(StatusCode::OK, &List::new(items, revision)))
}

pub async fn get<T: ApiResource>(
    State(state): State<ApiState>,
    target: Target,
) -> Result<Response, ApiError> {
    let ns = target.namespace.as_deref();
    match state.store.get::<T>(ns, target.name())? {
        Some(obj) => Ok(respond(StatusCode::OK, &obj)),
        None => Err(ApiError::object_not_found::<T>(ns, target.name())),
    }
}

pub async fn create<T: ApiResource>(
    State(state): State<ApiState>,
    target: Target,
    Params(params): Params<WriteParams>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    params.check()?;
    let value = parse_body(&content_type(&headers), &body)?;
    let mut obj: T = decode(value)?;
    place(&mut obj, &target)?;
    if obj.meta().name.is_empty() {
        if let Some(prefix) = obj.meta().generate_name.clone().filter(|p| !p.is_empty()) {
            obj.meta_mut().name = generated_name(&prefix);
        }
    }
    obj.clear_status();
    obj.normalize();
    obj.validate()?;
    let created = state.store.create(obj)?;
    state.store.sync().await?;
    tracing::info!("created {}", created.describe());
    Ok(respond(StatusCode::CREATED, &created))
}

pub async fn replace<T: ApiResource>(
    State(state): State<ApiState>,
    target: Target,
    Params(params): Params<WriteParams>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    params.check()?;
    let value = parse_body(&content_type(&headers), &body)?;
    let precondition = requested_version(&value).map(str::to_string);
    let mut obj: T = decode(value)?;
    place(&mut obj, &target)?;
    let updated = modify_checked::<T>(&state.store, &target, |current| {
        check_version::<T>(current, precondition.as_deref())?;
        obj.keep_system_fields(current);
        obj.normalize();
        obj.check_update(current)?;
        obj.validate()?;
        Ok(obj)
    })?
    .ok_or_else(|| ApiError::object_not_found::<T>(target.namespace.as_deref(), target.name()))?;
    state.store.sync().await?;
    tracing::info!("replaced {}", updated.describe());
    Ok(respond(StatusCode::OK, &updated))
}

pub async fn patch<T: ApiResource>(
    State(state): State<ApiState>,
    target: Target,
    Params(params): Params<WriteParams>,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    params.check()?;
    match content_type(&headers).as_str() {
        apply::APPLY_PATCH => apply::apply::<T>(&state, &target, &body).await,
        apply::MERGE_PATCH => apply::merge::<T>(&state, &target, &body).await,
        other => Err(ApiError::unsupported_media_type(format!(
            "PATCH with Content-Type {:?} is not supported: use {} (server-side apply) or {} (JSON merge patch)",
            other,
            apply::APPLY_PATCH,
            apply::MERGE_PATCH
        ))),
    }
}

pub async fn delete<T: ApiResource>(
    State(state): State<ApiState>,
    target: Target,
    Params(params): Params<DeleteParams>,
    Body(body): Body,
) -> Result<Response, ApiError> {
    let params = params.with_body(&body)?;
    let grace = params.grace()?;
    let propagation = params.propagation()?;
    let ns = target.namespace.as_deref();
    // A Pod that runs somewhere comes back terminating (with deletionTimestamp), as
    // Kubernetes answers a graceful delete; an object deleted in the foreground comes
    // back with deletionTimestamp and its finalizer; everything else as it was.
    let deleted = cascade::<T>(&state.store, ns, target.name(), grace, propagation)?
        .ok_or_else(|| ApiError::object_not_found::<T>(ns, target.name()))?;
    state.store.sync().await?;
    if deleted.meta().deletion_timestamp.is_some() {
        tracing::info!("deleting {} gracefully", deleted.describe());
    } else {
        tracing::info!("deleted {}", deleted.describe());
    }
    Ok(respond(StatusCode::OK, &deleted))
}

/// Deletes with the requested propagation (see `gc`). Pods own nothing and Namespaces
/// are emptied by their own controller, so for them every policy is their plain
/// delete.
fn cascade<T: ApiResource>(
    store: &Store,
    ns: Option<&str>,
    name: &str,
    grace: Option<i64>,
    propagation: Propagation,
) -> Result<Option<T>, StoreError> {
    if T::KIND == Pod::KIND || T::KIND == Namespace::KIND {
        return T::delete_from(store, ns, name, grace);
    }
    match propagation {
        Propagation::Background => T::delete_from(store, ns, name, grace),
        Propagation::Foreground => gc::start_foreground::<T>(store, ns, name),
        Propagation::Orphan => {
            // Marked deleted first, so its controller stops replacing what it no
            // longer sees as its own while the references are removed.
            let Some(marked) = store.modify::<T>(ns, name, |o| {
                let m = o.meta_mut();
                if m.deletion_timestamp.is_none() {
                    m.deletion_timestamp = Some(Time::now());
                    m.deletion_grace_period_seconds = Some(0);
                }
            })?
            else {
                return Ok(None);
            };
            if let Some(uid) = marked.meta().uid.as_deref() {
                let released = gc::orphan_dependents(store, uid)?;
                tracing::info!("{}: orphaned {released} dependents", marked.describe());
            }
            T::delete_from(store, ns, name, grace)
        }
    }
}

/// Decodes a request body as `T`: a body of another kind, or with fields `T` does not
/// have, is a 400 that names them.
pub fn decode<T: ApiResource>(value: Value) -> Result<T, ApiError> {
    let field = |name: &str| {
        value
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    };
    let kind = field("kind");
    let api_version = field("apiVersion");
    if kind.is_some_and(|k| k != T::KIND) || api_version.is_some_and(|v| v != T::API_VERSION) {
        return Err(ApiError::bad_request(format!(
            "the body is {} {}, but this URL serves {} {} objects",
            api_version.unwrap_or("<no apiVersion>"),
            kind.unwrap_or("<no kind>"),
            T::API_VERSION,
            T::KIND
        )));
    }
    Ok(manifest::decode::<T>(1, value)?)
}

/// Puts the object where the URL says: the namespace (and name, for `…/{name}` URLs)
/// fill in what the body leaves empty and must agree with what it sets.
pub fn place<T: ApiResource>(obj: &mut T, target: &Target) -> Result<(), ApiError> {
    let meta = obj.meta_mut();
    if meta.namespace.as_deref() == Some("") {
        meta.namespace = None;
    }
    if T::NAMESPACED {
        match (&meta.namespace, &target.namespace) {
            (Some(body), Some(url)) if body != url => {
                return Err(ApiError::bad_request(format!(
                    "the namespace of the object ({body}) does not match the namespace on the URL ({url})"
                )))
            }
            (_, Some(url)) => meta.namespace = Some(url.clone()),
            (_, None) => {}
        }
    }
    if let Some(url) = &target.name {
        if meta.name.is_empty() {
            meta.name = url.clone();
        } else if meta.name != *url {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({url})",
                meta.name
            )));
        }
    }
    Ok(())
}

/// A `metadata.resourceVersion` in the body is a precondition: the write only goes
/// through if nobody wrote the object since the client read it.
pub fn check_version<T: ApiResource>(current: &T, requested: Option<&str>) -> Result<(), ApiError> {
    let stored = current
        .meta()
        .resource_version
        .as_deref()
        .unwrap_or_default();
    match requested {
        Some(given) if given != stored => Err(StoreError::Conflict {
            kind: T::KIND,
            key: current.meta().key(),
            given: given.to_string(),
            current: stored.to_string(),
        }
        .into()),
        _ => Ok(()),
    }
}

/// Read-modify-write of the stored object under the store's write lock, so that what
/// `f` keeps from the current object (its status, above all) cannot be overwritten by
/// a stale copy. `Ok(None)` when the object does not exist. When `f` fails nothing is
/// written; when its result equals the stored object nothing is written either and
/// the resourceVersion stays.
pub fn modify_checked<T: ApiResource>(
    store: &Store,
    target: &Target,
    f: impl FnOnce(&T) -> Result<T, ApiError>,
) -> Result<Option<T>, ApiError> {
    let mut failure = None;
    let result = store.modify::<T>(
        target.namespace.as_deref(),
        target.name(),
        |current| match f(current) {
            Ok(next) => *current = next,
            Err(e) => failure = Some(e),
        },
    );
    if let Some(e) = failure {
        return Err(e);
    }
    Ok(result?)
}

/// `generateName` plus five random characters, as Kubernetes names Pods.
fn generated_name(prefix: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = (0..5)
        .map(|_| ALPHABET[rand::random::<usize>() % ALPHABET.len()] as char)
        .collect();
    format!("{prefix}{suffix}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use punnet_api::{Node, Pod};
    use serde_json::json;

    fn target(ns: Option<&str>, name: Option<&str>) -> Target {
        Target {
            namespace: ns.map(str::to_string),
            name: name.map(str::to_string),
        }
    }

    #[test]
    fn the_url_places_the_object() {
        let mut pod: Pod = decode(json!({"metadata": {"name": "web"}})).unwrap();
        place(&mut pod, &target(Some("default"), None)).unwrap();
        assert_eq!(pod.metadata.key(), "default/web");

        let mut pod: Pod = decode(json!({"metadata": {"namespace": "other"}})).unwrap();
        let err = place(&mut pod, &target(Some("default"), Some("web"))).unwrap_err();
        assert_eq!(err.status.code, 400);
        assert!(err
            .status
            .message
            .contains("namespace of the object (other)"));

        let mut pod: Pod = decode(json!({"metadata": {"name": "api"}})).unwrap();
        let err = place(&mut pod, &target(Some("default"), Some("web"))).unwrap_err();
        assert_eq!(
            err.status.message,
            "the name of the object (api) does not match the name on the URL (web)"
        );

        let mut node: Node = decode(json!({"metadata": {"namespace": ""}})).unwrap();
        place(&mut node, &target(None, Some("pi-1"))).unwrap();
        assert_eq!(node.metadata.key(), "pi-1");
    }

    #[test]
    fn bodies_of_another_kind_are_refused() {
        let err =
            decode::<Pod>(json!({"apiVersion": "apps/v1", "kind": "Deployment"})).unwrap_err();
        assert_eq!(
            err.status.message,
            "the body is apps/v1 Deployment, but this URL serves v1 Pod objects"
        );
        let err = decode::<Pod>(json!({"kind": "Pod", "spec": {"nope": 1}})).unwrap_err();
        assert!(
            err.status.message.contains("\"spec.nope\""),
            "{}",
            err.status.message
        );
    }

    #[test]
    fn generated_names_keep_the_prefix() {
        let n = generated_name("web-");
        assert!(n.starts_with("web-") && n.len() == 9, "{n}");
    }
}
