//! Object metadata shared by every kind: names, labels, identity, revision and owners,
//! plus the `Status` object the API answers errors with.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, Datelike, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A point in time, written as Kubernetes does: RFC 3339 in UTC with whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub DateTime<Utc>);

impl Time {
    pub fn now() -> Time {
        Time(Utc::now())
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Secs, true))
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            // Binary formats (postcard on the wire) keep full precision and stay small.
            (self.0.timestamp(), self.0.timestamp_subsec_nanos()).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Time, D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            DateTime::parse_from_rfc3339(&s)
                .map(|t| Time(t.with_timezone(&Utc)))
                .map_err(|e| serde::de::Error::custom(format!("invalid time {s:?}: {e}")))
        } else {
            let (secs, nanos) = <(i64, u32)>::deserialize(d)?;
            // Only years RFC 3339 can write: the controller stores times as JSON, and a
            // time it cannot read back would make the object unreadable (found by fuzzing).
            DateTime::from_timestamp(secs, nanos)
                .filter(|t| (0..=9999).contains(&t.year()))
                .map(Time)
                .ok_or_else(|| serde::de::Error::custom("time out of range (years 0 to 9999)"))
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub generate_name: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    #[serde(default)]
    pub uid: Option<String>,
    #[serde(default)]
    pub resource_version: Option<String>,
    #[serde(default)]
    pub generation: Option<i64>,
    #[serde(default)]
    pub creation_timestamp: Option<Time>,
    #[serde(default)]
    pub deletion_timestamp: Option<Time>,
    /// The grace period the deletion was asked with (set with `deletionTimestamp`).
    #[serde(default)]
    pub deletion_grace_period_seconds: Option<i64>,
    #[serde(default)]
    pub owner_references: Vec<OwnerReference>,
    /// What must happen before a deleted object leaves the store (`foregroundDeletion`:
    /// its blocking dependents are gone).
    #[serde(default)]
    pub finalizers: Vec<String>,
}

impl ObjectMeta {
    /// `resourceVersion` as the store's revision number (0 when unset or not a number):
    /// for comparing two copies of an object.
    pub fn revision(&self) -> u64 {
        self.resource_version
            .as_deref()
            .and_then(|r| r.parse().ok())
            .unwrap_or(0)
    }

    /// `namespace/name` for namespaced objects, `name` otherwise: the store key and the
    /// way errors name an object.
    pub fn key(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }

    pub fn namespace_or_default(&self) -> &str {
        self.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
    }

    /// The owner reference marked `controller: true`, if any.
    pub fn controller(&self) -> Option<&OwnerReference> {
        self.owner_references
            .iter()
            .find(|r| r.controller == Some(true))
    }
}

pub const DEFAULT_NAMESPACE: &str = "default";

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    #[serde(default)]
    pub controller: Option<bool>,
    #[serde(default)]
    pub block_owner_deletion: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    #[serde(default)]
    pub resource_version: Option<String>,
}

/// The Kubernetes `Status` object: how the API reports every error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[serde(default)]
    pub api_version: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub metadata: ListMeta,
    /// `Success` or `Failure`.
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub message: String,
    /// Machine-readable: `NotFound`, `AlreadyExists`, `Conflict`, `Invalid`, `BadRequest`, `Unauthorized`.
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub details: Option<StatusDetails>,
    #[serde(default)]
    pub code: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusDetails {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub causes: Vec<StatusCause>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusCause {
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub field: String,
}

impl Status {
    pub fn failure(code: u16, reason: &str, message: impl Into<String>) -> Status {
        Status {
            api_version: "v1".into(),
            kind: "Status".into(),
            status: "Failure".into(),
            message: message.into(),
            reason: reason.into(),
            code,
            ..Status::default()
        }
    }

    pub fn success() -> Status {
        Status {
            api_version: "v1".into(),
            kind: "Status".into(),
            status: "Success".into(),
            code: 200,
            ..Status::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Regression (fuzz target wire_status): a wire time outside years 0..=9999 decoded,
    /// and then its JSON (`-67715-10-05T02:03:44Z`) could not be read back.
    #[test]
    fn wire_times_are_limited_to_what_json_can_hold() {
        let decode =
            |secs: i64| postcard::from_bytes::<Time>(&postcard::to_stdvec(&(secs, 0u32)).unwrap());
        for secs in [-2_198_862_016_000, 253_402_300_800, i64::MIN, i64::MAX] {
            assert!(decode(secs).is_err(), "{secs}");
        }
        for secs in [-62_167_219_200, 0, 1_764_547_200, 253_402_300_799] {
            let t = decode(secs).unwrap();
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(serde_json::from_str::<Time>(&json).unwrap(), t, "{json}");
        }
    }
}
