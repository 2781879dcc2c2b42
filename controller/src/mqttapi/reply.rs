//! The one reply every command gets: JSON shaped after a Kubernetes `Status` (`code`,
//! `reason`, `message`), with one result per object, and the topic it goes to. Pure.

use serde::Serialize;
use serde_json::Value;

use super::command::Envelope;

/// The answer to one command.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reply {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub verb: String,
    /// Whether every object was handled.
    pub ok: bool,
    /// The HTTP status code the REST API gave (the first failure's, else the last one's).
    pub code: u16,
    /// `Invalid`, `NotFound`, `Unauthorized`, … as in a Kubernetes `Status`; empty on success.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// kubectl's line on success (`deployment.apps/web scaled`), the REST API's message
    /// on failure; one line per object.
    pub message: String,
    pub results: Vec<ObjectResult>,
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ObjectResult {
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub code: u16,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub reason: String,
    pub message: String,
    /// The object's resourceVersion after a successful write.
    #[serde(rename = "resourceVersion", skip_serializing_if = "Option::is_none")]
    pub resource_version: Option<String>,
}

impl ObjectResult {
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.code)
    }
}

impl Reply {
    /// A reply from the results of each object, in order.
    pub fn from_results(env: &Envelope, verb: &str, results: Vec<ObjectResult>) -> Reply {
        let failed = results.iter().find(|r| !r.ok());
        let (code, reason) = match failed {
            Some(f) => (f.code, f.reason.clone()),
            None => (results.last().map_or(200, |r| r.code), String::new()),
        };
        let message = results
            .iter()
            .map(|r| r.message.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        Reply {
            id: env.id.clone(),
            verb: verb.to_string(),
            ok: failed.is_none(),
            code,
            reason,
            message,
            results,
        }
    }

    /// A command refused before it touched any object.
    pub fn failure(env: &Envelope, verb: &str, code: u16, reason: &str, message: String) -> Reply {
        Reply {
            id: env.id.clone(),
            verb: verb.to_string(),
            ok: false,
            code,
            reason: reason.to_string(),
            message,
            results: Vec::new(),
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The fields of a REST error body (a `Status`): reason and message.
pub fn status_of(body: &Value) -> (String, String) {
    let text = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    (text("reason"), text("message"))
}

/// Where the reply goes when the command named no MQTT 5 response topic:
/// `<prefix>/cmd/reply/<id>`, or `<prefix>/cmd/reply` for a command without an id.
pub fn reply_topic(prefix: &str, id: Option<&str>) -> String {
    match id.filter(|id| valid_topic_level(id)) {
        Some(id) => format!("{prefix}/cmd/reply/{id}"),
        None => format!("{prefix}/cmd/reply"),
    }
}

/// Whether the controller answers on an MQTT 5 response topic: only under
/// `<prefix>/cmd/reply/`, which operator logins may read on either broker. Anywhere else
/// the controller (which may publish everywhere) would be a deputy writing on topics of
/// the protocol (a node's desired state, another command) for whoever sent the command.
pub fn response_topic_allowed(prefix: &str, topic: &str) -> bool {
    topic
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix("/cmd/reply/"))
        .is_some_and(|rest| !rest.is_empty() && !rest.contains(['+', '#', '\0']))
}

/// An id usable as one topic level: no wildcards, separators or NUL.
fn valid_topic_level(s: &str) -> bool {
    !s.is_empty() && s.len() <= 128 && !s.contains(['/', '+', '#', '\0'])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(code: u16, message: &str) -> ObjectResult {
        ObjectResult {
            kind: "Deployment".into(),
            namespace: Some("default".into()),
            name: "web".into(),
            code,
            reason: if code >= 300 {
                "Invalid".into()
            } else {
                String::new()
            },
            message: message.into(),
            resource_version: None,
        }
    }

    #[test]
    fn a_failure_among_results_decides_the_reply() {
        let env = Envelope {
            id: Some("9".into()),
            token: Some("secret".into()),
        };
        let r = Reply::from_results(
            &env,
            "apply",
            vec![
                result(201, "configmap/a created"),
                result(422, "bad replicas"),
            ],
        );
        assert!(!r.ok);
        assert_eq!((r.code, r.reason.as_str()), (422, "Invalid"));
        assert_eq!(r.message, "configmap/a created\nbad replicas");
        let json: Value = serde_json::from_slice(&r.to_bytes()).unwrap();
        assert_eq!(json["id"], "9");
        assert!(json.get("token").is_none(), "the token is never echoed");
        assert_eq!(json["results"][0]["namespace"], "default");

        let ok = Reply::from_results(&Envelope::default(), "scale", vec![result(200, "scaled")]);
        assert!(ok.ok && ok.code == 200 && ok.reason.is_empty());
        let json: Value = serde_json::from_slice(&ok.to_bytes()).unwrap();
        assert!(json.get("id").is_none() && json.get("reason").is_none());
    }

    #[test]
    fn reply_topics() {
        assert_eq!(
            reply_topic("punnet/v1", Some("42")),
            "punnet/v1/cmd/reply/42"
        );
        assert_eq!(reply_topic("punnet/v1", None), "punnet/v1/cmd/reply");
        assert_eq!(reply_topic("punnet/v1", Some("a/#")), "punnet/v1/cmd/reply");
    }

    #[test]
    fn response_topics_stay_under_cmd_reply() {
        assert!(response_topic_allowed(
            "punnet/v1",
            "punnet/v1/cmd/reply/me"
        ));
        assert!(response_topic_allowed(
            "punnet/v1",
            "punnet/v1/cmd/reply/nodered/7"
        ));
        for bad in [
            "me/replies",
            "punnet/v1/cmd/reply/",
            "punnet/v1/cmd/apply",
            "punnet/v1/nodes/pi-1/desired",
            "punnet/v1/cmd/reply/+",
            "punnet/v1x/cmd/reply/me",
        ] {
            assert!(!response_topic_allowed("punnet/v1", bad), "{bad}");
        }
    }
}
