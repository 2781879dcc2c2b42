//! Carries out a parsed command through the REST API's own router, in process: the
//! request is the one `punnet` would send, so validation, status codes and messages are
//! the REST API's, word for word.

use axum::body::Body;
use axum::http::{header, Request as HttpRequest};
use axum::Router;
use serde_json::Value;
use tower::ServiceExt;

use super::command::{Command, Envelope, KindInfo, ObjectRef, Request};
use super::reply::{status_of, ObjectResult, Reply};

/// The router and the credential its requests carry.
#[derive(Clone)]
pub struct Executor {
    router: Router,
    /// The controller's admin token: the command's sender has already been authorised
    /// (see `auth`); the REST layer still checks a token like for any request.
    bearer: String,
}

/// A REST answer: status code and JSON body.
struct Answer {
    code: u16,
    body: Value,
}

impl Executor {
    pub fn new(router: Router, admin_token: &str) -> Executor {
        Executor {
            router,
            bearer: format!("Bearer {}", admin_token.trim()),
        }
    }

    async fn send(&self, r: &Request) -> Answer {
        let request = HttpRequest::builder()
            .method(r.method)
            .uri(&r.path)
            .header(header::AUTHORIZATION, &self.bearer)
            .header(header::CONTENT_TYPE, r.content_type)
            .body(Body::from(r.body.clone()));
        let request = match request {
            Ok(req) => req,
            Err(e) => {
                return Answer {
                    code: 400,
                    body: serde_json::json!({"reason": "BadRequest", "message": format!("cannot build the request for {}: {e}", r.path)}),
                }
            }
        };
        let response = match self.router.clone().oneshot(request).await {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let code = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), crate::http::MAX_BODY_BYTES)
            .await
            .unwrap_or_default();
        Answer {
            code,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        }
    }

    /// Runs `command` and shapes its reply.
    pub async fn run(&self, env: &Envelope, verb: &str, command: Command, now: &str) -> Reply {
        let results = match command {
            Command::Apply(docs) => {
                let mut out = Vec::with_capacity(docs.len());
                for (i, doc) in docs.iter().enumerate() {
                    out.push(match Request::apply(doc, i) {
                        Ok((target, request)) => {
                            let answer = self.send(&request).await;
                            let verb = if answer.code == 201 {
                                "created"
                            } else {
                                "configured"
                            };
                            result(&target, answer, verb)
                        }
                        Err(bad) => ObjectResult {
                            kind: doc
                                .get("kind")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_string(),
                            namespace: None,
                            name: String::new(),
                            code: 400,
                            reason: "BadRequest".into(),
                            message: bad.0,
                            resource_version: None,
                        },
                    });
                }
                out
            }
            Command::Delete(target) => {
                vec![result(
                    &target,
                    self.send(&Request::delete(&target)).await,
                    "deleted",
                )]
            }
            Command::Scale(target, n) => {
                vec![result(
                    &target,
                    self.send(&Request::scale(&target, n)).await,
                    "scaled",
                )]
            }
            Command::Restart(target) => vec![self.restart(&target, now).await],
            Command::Cordon(node) | Command::Uncordon(node) => {
                let on = verb == "cordon";
                let target = ObjectRef {
                    kind: KindInfo::find("Node").expect("Node is served"),
                    namespace: None,
                    name: node.clone(),
                };
                let answer = self.send(&Request::cordon(&node, on)).await;
                vec![result(
                    &target,
                    answer,
                    if on { "cordoned" } else { "uncordoned" },
                )]
            }
        };
        Reply::from_results(env, verb, results)
    }

    /// A Deployment gets a rolling restart (refused while paused, as `punnet rollout
    /// restart` refuses); a Pod that a controller owns is deleted so that its owner makes a
    /// new one. A Pod nobody owns would simply be gone, so that is refused.
    async fn restart(&self, target: &ObjectRef, now: &str) -> ObjectResult {
        let current = self.send(&Request::get(target)).await;
        if !(200..300).contains(&current.code) {
            return result(target, current, "");
        }
        if target.kind.kind == "Deployment" {
            if current.body["spec"]["paused"] == Value::Bool(true) {
                return refused(
                    target,
                    format!(
                        "{} can't restart paused deployment (resume it first)",
                        target.kind.reference(&target.name)
                    ),
                );
            }
            let answer = self.send(&Request::restart_deployment(target, now)).await;
            return result(target, answer, "restarted");
        }
        let owned = current.body["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|refs| refs.iter().any(|r| r["controller"] == Value::Bool(true)));
        if !owned {
            return refused(
                target,
                format!(
                    "{} has no controller that would re-create it; delete it and apply it again instead",
                    target.describe()
                ),
            );
        }
        result(
            target,
            self.send(&Request::delete(target)).await,
            "restarted",
        )
    }
}

fn refused(target: &ObjectRef, message: String) -> ObjectResult {
    ObjectResult {
        kind: target.kind.kind.to_string(),
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        code: 409,
        reason: "Conflict".into(),
        message,
        resource_version: None,
    }
}

fn result(target: &ObjectRef, answer: Answer, done: &str) -> ObjectResult {
    let ok = (200..300).contains(&answer.code);
    let (reason, message) = if ok {
        (
            String::new(),
            format!("{} {done}", target.kind.reference(&target.name)),
        )
    } else {
        let (reason, message) = status_of(&answer.body);
        let message = if message.is_empty() {
            format!("{}: HTTP {}", target.describe(), answer.code)
        } else {
            message
        };
        (reason, message)
    };
    ObjectResult {
        kind: target.kind.kind.to_string(),
        namespace: target.namespace.clone(),
        name: target.name.clone(),
        code: answer.code,
        reason,
        message,
        resource_version: ok
            .then(|| {
                answer.body["metadata"]["resourceVersion"]
                    .as_str()
                    .map(str::to_string)
            })
            .flatten(),
    }
}
