//! What a list request asks for: `labelSelector`, `fieldSelector` (equality on dotted
//! JSON paths such as `spec.nodeName=pi-1`, which `kubectl describe node` uses), and
//! whether it is a watch (`watch=true` with `resourceVersion`, `allowWatchBookmarks`,
//! `timeoutSeconds`; served by `http::watch`). Options Punnet does not serve are refused
//! rather than silently ignored.

use punnet_api::selector::Selector;
use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListParams {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub watch: Option<String>,
    pub resource_version: Option<String>,
    pub allow_watch_bookmarks: Option<String>,
    pub timeout_seconds: Option<String>,
}

/// Kubernetes' default for watches without `timeoutSeconds` is 30 to 60 minutes; the
/// client re-lists or resumes after it, which heals anything a long stream missed.
pub const DEFAULT_WATCH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1800);

/// How a watch starts and ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchParams {
    /// `None` (unset or "0"): send the current objects as ADDED first.
    pub resource_version: Option<u64>,
    pub bookmarks: bool,
    pub timeout: std::time::Duration,
}

fn is_true(v: Option<&str>) -> bool {
    v.is_some_and(|w| !matches!(w, "" | "false" | "0"))
}

impl ListParams {
    pub fn is_watch(&self) -> bool {
        is_true(self.watch.as_deref())
    }

    /// The watch options, checked.
    pub fn watch_params(&self) -> Result<WatchParams, ApiError> {
        let resource_version = match self.resource_version.as_deref().map(str::trim) {
            None | Some("") | Some("0") => None,
            Some(v) => Some(v.parse::<u64>().map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid resourceVersion {v:?}: expected the resourceVersion of a list or of a watch event"
                ))
            })?),
        };
        let timeout = match self.timeout_seconds.as_deref().map(str::trim) {
            None | Some("") => DEFAULT_WATCH_TIMEOUT,
            Some(t) => match t.parse::<u64>() {
                Ok(0) => DEFAULT_WATCH_TIMEOUT,
                Ok(s) => std::time::Duration::from_secs(s),
                Err(_) => {
                    return Err(ApiError::bad_request(format!(
                        "invalid timeoutSeconds {t:?}: expected a whole number of seconds"
                    )))
                }
            },
        };
        Ok(WatchParams {
            resource_version,
            bookmarks: is_true(self.allow_watch_bookmarks.as_deref()),
            timeout,
        })
    }
}

/// Query parameters of writes. `fieldManager` and `force` are accepted and ignored
/// (there is one manager: whoever applies last wins).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WriteParams {
    pub dry_run: Option<String>,
}

impl WriteParams {
    /// Refuses `dryRun`: doing the write anyway would be the worst answer.
    pub fn check(&self) -> Result<(), ApiError> {
        match self.dry_run.as_deref() {
            None | Some("") => Ok(()),
            Some(_) => Err(ApiError::bad_request("dryRun is not supported by Punnet")),
        }
    }
}

/// Query parameters of `DELETE`: `dryRun` as for writes, `gracePeriodSeconds` (for
/// Pods: how long their containers get to stop; 0 removes the Pod at once) and
/// `propagationPolicy` (`Background`, `Foreground`, `Orphan`: see `gc`). A
/// `DeleteOptions` body may carry the same fields; where both do, the body wins.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteParams {
    pub dry_run: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
}

/// The `DeleteOptions` body kubectl and client libraries send with `DELETE`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeleteOptions {
    #[serde(default)]
    pub grace_period_seconds: Option<i64>,
    #[serde(default)]
    pub propagation_policy: Option<String>,
    /// The old form of `propagationPolicy: Orphan`.
    #[serde(default)]
    pub orphan_dependents: Option<bool>,
    #[serde(default)]
    pub dry_run: Vec<String>,
}

impl DeleteParams {
    /// Folds a `DeleteOptions` body (possibly empty) into the query's parameters.
    pub fn with_body(mut self, body: &[u8]) -> Result<DeleteParams, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(self);
        }
        let opts: DeleteOptions = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!("the DELETE body is not a valid DeleteOptions: {e}"))
        })?;
        if let Some(g) = opts.grace_period_seconds {
            self.grace_period_seconds = Some(g);
        }
        if let Some(p) = opts.propagation_policy {
            self.propagation_policy = Some(p);
        } else if opts.orphan_dependents == Some(true) {
            self.propagation_policy = Some("Orphan".into());
        }
        if let Some(d) = opts.dry_run.first() {
            self.dry_run = Some(d.clone());
        }
        Ok(self)
    }

    /// The requested propagation, checked; Background when unset.
    pub fn propagation(&self) -> Result<crate::gc::Propagation, ApiError> {
        match self.propagation_policy.as_deref() {
            None | Some("") => Ok(crate::gc::Propagation::Background),
            Some(p) => crate::gc::Propagation::parse(p).map_err(ApiError::bad_request),
        }
    }
}

impl DeleteParams {
    /// The requested grace period, checked.
    pub fn grace(&self) -> Result<Option<i64>, ApiError> {
        WriteParams {
            dry_run: self.dry_run.clone(),
        }
        .check()?;
        match self.grace_period_seconds {
            Some(g) if g < 0 => Err(ApiError::bad_request(format!(
                "gracePeriodSeconds must not be negative (got {g})"
            ))),
            g => Ok(g),
        }
    }
}

/// The filters of a list request.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    labels: Selector,
    fields: Vec<FieldRequirement>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FieldRequirement {
    path: String,
    value: String,
    equal: bool,
}

impl ListFilter {
    pub fn from_params(params: &ListParams) -> Result<ListFilter, ApiError> {
        let labels = match params.label_selector.as_deref() {
            Some(s) => Selector::parse(s)?,
            None => Selector::default(),
        };
        let fields = match params.field_selector.as_deref() {
            Some(s) => parse_field_selector(s)?,
            None => Vec::new(),
        };
        Ok(ListFilter { labels, fields })
    }

    /// Whether the request filters at all (a watch then turns objects that stop
    /// matching into DELETED).
    pub fn is_filtered(&self) -> bool {
        !self.labels.is_empty() || !self.fields.is_empty()
    }

    /// Whether an object (its labels and its JSON form) passes every filter.
    pub fn matches(
        &self,
        labels: &std::collections::BTreeMap<String, String>,
        json: impl FnOnce() -> Value,
    ) -> bool {
        if !self.labels.matches(labels) {
            return false;
        }
        if self.fields.is_empty() {
            return true;
        }
        let json = json();
        self.fields
            .iter()
            .all(|r| (field_value(&json, &r.path) == r.value) == r.equal)
    }
}

fn parse_field_selector(text: &str) -> Result<Vec<FieldRequirement>, ApiError> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (path, value, equal) = if let Some((p, v)) = part.split_once("!=") {
            (p, v, false)
        } else if let Some((p, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            (p, v, true)
        } else {
            return Err(ApiError::bad_request(format!(
                "invalid field selector {text:?}: {part:?} is not `field=value` or `field!=value`"
            )));
        };
        let path = path.trim();
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(ApiError::bad_request(format!(
                "invalid field selector {text:?}: {path:?} is not a field path like spec.nodeName"
            )));
        }
        out.push(FieldRequirement {
            path: path.to_string(),
            value: value.trim().to_string(),
            equal,
        });
    }
    Ok(out)
}

/// The value at a dotted path as a string; missing fields read as `""`, as in
/// Kubernetes (`spec.nodeName=` selects unscheduled Pods).
fn field_value(json: &Value, path: &str) -> String {
    let mut v = json;
    for part in path.split('.') {
        match v.get(part) {
            Some(next) => v = next,
            None => return String::new(),
        }
    }
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(labels: Option<&str>, fields: Option<&str>) -> Result<ListFilter, ApiError> {
        ListFilter::from_params(&ListParams {
            label_selector: labels.map(str::to_string),
            field_selector: fields.map(str::to_string),
            ..Default::default()
        })
    }

    #[test]
    fn field_selectors_compare_dotted_paths() {
        let pod = json!({"metadata": {"name": "web"}, "spec": {"nodeName": "pi-1", "replicas": 2}});
        let none = Default::default();
        let yes = |f: &str| {
            filter(None, Some(f))
                .unwrap()
                .matches(&none, || pod.clone())
        };
        assert!(yes("spec.nodeName=pi-1"));
        assert!(yes("spec.nodeName==pi-1,metadata.name=web"));
        assert!(!yes("spec.nodeName!=pi-1"));
        assert!(yes("status.phase="));
        assert!(yes("spec.replicas=2"));
        assert!(filter(None, Some("spec.nodeName")).is_err());
        assert!(filter(None, Some("spec..x=1")).is_err());
    }

    #[test]
    fn label_selectors_and_refusals() {
        let labels = [("app".to_string(), "web".to_string())].into();
        assert!(filter(Some("app=web"), None)
            .unwrap()
            .matches(&labels, || Value::Null));
        assert!(!filter(Some("app=db"), None)
            .unwrap()
            .matches(&labels, || Value::Null));
        assert_eq!(
            filter(Some("env in prod"), None).unwrap_err().status.code,
            400
        );
        let watch = ListParams {
            watch: Some("true".into()),
            resource_version: Some("12".into()),
            allow_watch_bookmarks: Some("true".into()),
            timeout_seconds: Some("5".into()),
            ..Default::default()
        };
        assert!(watch.is_watch());
        assert_eq!(
            watch.watch_params().unwrap(),
            WatchParams {
                resource_version: Some(12),
                bookmarks: true,
                timeout: std::time::Duration::from_secs(5)
            }
        );
        let bad = ListParams {
            resource_version: Some("x".into()),
            ..Default::default()
        };
        assert_eq!(bad.watch_params().unwrap_err().status.code, 400);
        assert!(!ListParams::default().is_watch());
        assert_eq!(
            ListParams::default()
                .watch_params()
                .unwrap()
                .resource_version,
            None
        );
        assert!(WriteParams {
            dry_run: Some("All".into())
        }
        .check()
        .is_err());
        assert!(WriteParams::default().check().is_ok());
    }
}
