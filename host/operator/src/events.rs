//! Publishing `events.k8s.io/v1` Events about Scalers, without a client-side cache.
//!
//! kube-runtime's `Recorder` keeps every event it published for six minutes to merge repeats
//! into a series. hoist's events are one per stage transition of one operation, so repeats
//! are rare; with thousands of Scalers changing at once that cache held tens of MiB (see
//! tests/benches/scale.rs). This publisher creates each Event and keeps nothing.

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Api, Client};

/// Creates Events as `reporter`.
#[derive(Clone)]
pub struct Publisher {
    client: Client,
    reporter: Reporter,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("reporter", &self.reporter)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(client: Client, reporter: Reporter) -> Self {
        Self { client, reporter }
    }

    /// Builds the Event for `ev` about `regarding`. Pure apart from the clock.
    fn event(&self, ev: &Event, regarding: &ObjectReference) -> K8sEvent {
        let now = jiff::Timestamp::now();
        let controller = &self.reporter.controller;
        K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.clone(),
            type_: Some(
                match ev.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(controller.clone()),
            reporting_instance: Some(
                self.reporter
                    .instance
                    .clone()
                    .unwrap_or_else(|| controller.clone()),
            ),
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(format!(
                    "{}.{:x}",
                    regarding.name.as_deref().unwrap_or(controller),
                    now.as_nanosecond()
                )),
                ..ObjectMeta::default()
            },
            ..K8sEvent::default()
        }
    }

    /// Creates the Event (same signature as kube-runtime's `Recorder::publish`).
    pub async fn publish(
        &self,
        ev: &Event,
        regarding: &ObjectReference,
    ) -> Result<(), kube::Error> {
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        events
            .create(&PostParams::default(), &self.event(ev, regarding))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn builds_an_event_like_the_recorder() {
        // A client that is never used: building the event needs no I/O.
        let config = kube::Config::new("http://127.0.0.1:1".parse().unwrap());
        let client = Client::try_from(config).unwrap();
        let p = Publisher::new(
            client,
            Reporter {
                controller: "hoist".into(),
                instance: Some("hoist-0".into()),
            },
        );
        let regarding = ObjectReference {
            kind: Some("Scaler".into()),
            name: Some("trino".into()),
            namespace: Some("team".into()),
            ..ObjectReference::default()
        };
        let e = p.event(
            &Event {
                type_: EventType::Warning,
                reason: "OperationFailed".into(),
                note: Some("pre-scale failed".into()),
                action: "Scale".into(),
                secondary: None,
            },
            &regarding,
        );
        assert_eq!(e.type_.as_deref(), Some("Warning"));
        assert_eq!(e.reason.as_deref(), Some("OperationFailed"));
        assert_eq!(e.reporting_instance.as_deref(), Some("hoist-0"));
        assert_eq!(e.metadata.namespace.as_deref(), Some("team"));
        assert!(e.metadata.name.unwrap().starts_with("trino."));
        assert_eq!(e.regarding, Some(regarding));
        assert!(e.event_time.is_some() && e.series.is_none());
    }
}
