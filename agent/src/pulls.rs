//! Image pulls as the agent runs them: whether a container may start or waits for its
//! image (Kubernetes' pull policies), pulls in flight with their progress for Pod
//! status, and failed pulls retried with back-off (`ErrImagePull`, then
//! `ImagePullBackOff`). One pull per image reference at a time; a finished pull wakes
//! the agent's loop through `done`.
//!
//! One departure from the kubelet, for boards that lose their network: with policy
//! `Always`, an image that is already on the node is used when the registry cannot be
//! reached, instead of keeping a crashed container down until the network returns.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use punnet_api::pod::{Container, PullPolicy};
use tokio::sync::mpsc;

use crate::image::{ImageStore, PullError, PullOptions, PullProgress, RegistryCredentials};
use crate::platform::Platform;

/// A successful `Always` pull counts for this long: a container that crashes and
/// restarts does not send the board back to the registry each time.
const ALWAYS_FRESH: Duration = Duration::from_secs(60);
const RETRY_BASE: Duration = Duration::from_secs(10);
const RETRY_MAX: Duration = Duration::from_secs(300);

enum State {
    Pulling {
        progress: Arc<Mutex<Option<PullProgress>>>,
    },
    Failed {
        message: String,
        retryable: bool,
        retry_at: Instant,
        attempts: u32,
    },
    Pulled {
        at: Instant,
    },
}

/// Whether a container can start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    Ready,
    /// Waits, with the reason and message for its `state.waiting`.
    Wait {
        reason: String,
        message: String,
    },
}

/// How a pull ended, for the agent's loop.
pub struct PullDone {
    pub reference: String,
    pub result: Result<String, String>,
}

pub struct Pulls {
    store: Arc<ImageStore>,
    platform: Platform,
    insecure: Vec<String>,
    state: BTreeMap<String, State>,
    done: mpsc::UnboundedSender<PullDone>,
}

impl Pulls {
    pub fn new(
        store: Arc<ImageStore>,
        platform: Platform,
        insecure: Vec<String>,
        done: mpsc::UnboundedSender<PullDone>,
    ) -> Pulls {
        Pulls {
            store,
            platform,
            insecure,
            state: BTreeMap::new(),
            done,
        }
    }

    /// Decides for one container about to start; starts a pull when one is due.
    /// `creds` is looked up only when a pull starts.
    pub fn gate(
        &mut self,
        container: &Container,
        creds: impl FnOnce(&str) -> Option<RegistryCredentials>,
    ) -> Gate {
        let reference = container.image.clone();
        let present = self.store.image_id(&reference).is_ok();
        let policy = container.pull_policy();
        let now = Instant::now();
        match (policy, present) {
            (PullPolicy::Never, _) => return Gate::Ready,
            (PullPolicy::IfNotPresent, true) => return Gate::Ready,
            _ => {}
        }
        match self.state.get(&reference) {
            Some(State::Pulling { progress }) => {
                return Gate::Wait {
                    reason: "ContainerCreating".into(),
                    message: pulling_message(&reference, progress.lock().ok().and_then(|p| *p)),
                }
            }
            Some(State::Pulled { at }) if present && now.duration_since(*at) < ALWAYS_FRESH => {
                return Gate::Ready
            }
            Some(State::Failed {
                message,
                retryable,
                retry_at,
                ..
            }) if now < *retry_at => {
                if present && *retryable {
                    // Offline board, image on hand: run what there is.
                    return Gate::Ready;
                }
                return Gate::Wait {
                    reason: "ImagePullBackOff".into(),
                    message: format!("Back-off pulling image \"{reference}\": {message}"),
                };
            }
            _ => {}
        }
        self.start(reference.clone(), creds(&reference));
        Gate::Wait {
            reason: "ContainerCreating".into(),
            message: pulling_message(&reference, None),
        }
    }

    fn start(&mut self, reference: String, auth: Option<RegistryCredentials>) {
        let progress = Arc::new(Mutex::new(None));
        let attempts = match self.state.get(&reference) {
            Some(State::Failed { attempts, .. }) => *attempts,
            _ => 0,
        };
        // Attempts survive in the task's result so the back-off keeps growing.
        self.state.insert(
            reference.clone(),
            State::Pulling {
                progress: progress.clone(),
            },
        );
        let mut opts = PullOptions::new(self.platform.clone());
        opts.auth = auth;
        opts.insecure_registries = self.insecure.clone();
        let sink = progress.clone();
        opts.progress = Some(Arc::new(move |p: PullProgress| {
            if let Ok(mut slot) = sink.lock() {
                *slot = Some(p);
            }
        }));
        let (store, done) = (self.store.clone(), self.done.clone());
        tracing::info!(image = %reference, "pulling image");
        tokio::spawn(async move {
            let started = Instant::now();
            let result = match store.pull(&reference, &opts).await {
                Ok(p) => {
                    tracing::info!(image = %reference, digest = %p.digest, platform = %p.platform, bytes = p.bytes_fetched, took = ?started.elapsed(), "pulled image");
                    Ok(p.image_id)
                }
                Err(e) => {
                    tracing::warn!(image = %reference, error = %e, "pull failed");
                    Err(encode_failure(&e, attempts))
                }
            };
            let _ = done.send(PullDone { reference, result });
        });
    }

    /// Records a finished pull (from the `done` channel).
    pub fn finish(&mut self, done: PullDone) {
        let state = match done.result {
            Ok(_) => State::Pulled { at: Instant::now() },
            Err(encoded) => {
                let (retryable, attempts, message) = decode_failure(&encoded);
                let attempts = attempts + 1;
                let factor = 1u32 << (attempts - 1).min(5);
                State::Failed {
                    message,
                    retryable,
                    retry_at: Instant::now() + (RETRY_BASE * factor).min(RETRY_MAX),
                    attempts,
                }
            }
        };
        self.state.insert(done.reference, state);
    }

    /// Forgets pulls of images no desired container uses.
    pub fn retain(&mut self, images: &[String]) {
        self.state
            .retain(|r, s| matches!(s, State::Pulling { .. }) || images.contains(r));
    }
}

/// The failure travels as text through the channel: `retryable|attempts|message`.
fn encode_failure(e: &PullError, attempts: u32) -> String {
    format!("{}|{attempts}|{e}", u8::from(e.is_retryable()))
}

fn decode_failure(s: &str) -> (bool, u32, String) {
    let mut parts = s.splitn(3, '|');
    let retryable = parts.next() == Some("1");
    let attempts = parts.next().and_then(|a| a.parse().ok()).unwrap_or(0);
    (
        retryable,
        attempts,
        parts.next().unwrap_or_default().to_string(),
    )
}

/// `Pulling image "busybox:1.36": 1.2 MiB of 3.4 MiB (1/3 layers)`.
pub fn pulling_message(reference: &str, progress: Option<PullProgress>) -> String {
    match progress {
        Some(p) if p.bytes_total > 0 => format!(
            "Pulling image \"{reference}\": {} of {} ({}/{} layers)",
            human_bytes(p.bytes_done),
            human_bytes(p.bytes_total),
            p.layers_done,
            p.layers_total
        ),
        _ => format!("Pulling image \"{reference}\""),
    }
}

/// `812 KiB`, `3.4 MiB`.
fn human_bytes(b: u64) -> String {
    if b >= 1 << 20 {
        format!("{:.1} MiB", b as f64 / f64::from(1u32 << 20))
    } else {
        format!("{} KiB", b.div_ceil(1024))
    }
}

/// The registry credentials among a Pod's image pull secrets (docker config.json).
pub fn credentials_for(
    reference: &str,
    secrets: &[&punnet_api::Secret],
) -> Option<RegistryCredentials> {
    let domain = crate::image::Reference::parse(reference).ok()?.domain;
    secrets.iter().find_map(|s| {
        let entries = s.entries();
        let json = entries
            .get(punnet_api::configdata::DOCKER_CONFIG_JSON_KEY)
            .or_else(|| entries.get(".dockercfg"))?;
        crate::image::docker_config_credentials(json, &domain)
            .ok()
            .flatten()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_like_the_kubelet_event() {
        let p = PullProgress {
            bytes_done: 3 << 20,
            bytes_total: 12 << 20,
            layers_done: 1,
            layers_total: 3,
        };
        assert_eq!(
            pulling_message("busybox:1.36", Some(p)),
            "Pulling image \"busybox:1.36\": 3.0 MiB of 12.0 MiB (1/3 layers)"
        );
        assert_eq!(pulling_message("a", None), "Pulling image \"a\"");
    }

    #[test]
    fn failures_round_trip_through_the_channel() {
        assert_eq!(
            decode_failure("1|2|registry down|really"),
            (true, 2, "registry down|really".to_string())
        );
    }

    #[test]
    fn pull_secrets_give_credentials_for_the_images_registry() {
        let json = r#"{"auths":{"reg.lan:5000":{"username":"pi","password":"raspberry"}}}"#;
        let mut s = punnet_api::Secret::default();
        s.string_data
            .insert(".dockerconfigjson".into(), json.into());
        let c = credentials_for("reg.lan:5000/app:1", &[&s]).unwrap();
        assert_eq!(
            (c.username.as_str(), c.password.as_str()),
            ("pi", "raspberry")
        );
        assert!(credentials_for("docker.io/library/busybox", &[&s]).is_none());
    }
}
