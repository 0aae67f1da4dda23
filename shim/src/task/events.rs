//! Task events to containerd. Each event type carries its own topic
//! (`containerd_shim::event::Event`), so a caller cannot pair an event with the wrong one.
//!
//! Events are encoded here from their concrete type ([`Outgoing::new`]), not through
//! containerd-shim's `publish`: that names an event by protobuf's runtime reflection,
//! whose first use parses the descriptors of the event's proto file and of everything it
//! imports (descriptor.proto's comments included) and keeps them, some 400 kB of heap in
//! every pod's shim for a name known at compile time.

use async_trait::async_trait;
use containerd_shim::event::Event;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::Events;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;

/// The protobuf package of containerd's task events (api/events/task.proto).
const EVENTS_PACKAGE: &str = "containerd.events";

/// An event encoded for containerd: its topic, its type's full protobuf name (the type URL
/// containerd's typeurl registry knows it by) and its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    pub topic: String,
    pub type_url: String,
    pub value: Vec<u8>,
}

impl Outgoing {
    pub fn new<E: Event + Message>(event: &E) -> Result<Outgoing, String> {
        Ok(Outgoing {
            topic: event.topic(),
            type_url: format!("{EVENTS_PACKAGE}.{}", E::NAME),
            value: event
                .write_to_bytes()
                .map_err(|e| format!("encoding {}: {e}", E::NAME))?,
        })
    }
}

/// Where the Task service sends its events: containerd, or a recorder in tests.
#[async_trait]
pub trait EventSink: Send + Sync {
    /// Failures are logged, never returned: an event containerd misses does not undo the
    /// call that caused it.
    async fn publish(&self, event: Outgoing);
}

/// containerd's event service, over the ttrpc address it gave the shim.
pub struct RemoteEvents {
    publisher: RemotePublisher,
    namespace: String,
}

impl RemoteEvents {
    pub fn new(publisher: RemotePublisher, namespace: &str) -> RemoteEvents {
        RemoteEvents {
            publisher,
            namespace: namespace.to_string(),
        }
    }
}

#[async_trait]
impl EventSink for RemoteEvents {
    async fn publish(&self, event: Outgoing) {
        let envelope = Envelope {
            timestamp: MessageField::some(super::now()),
            namespace: self.namespace.clone(),
            topic: event.topic.clone(),
            event: MessageField::some(Any {
                type_url: event.type_url,
                value: event.value,
                ..Default::default()
            }),
            ..Default::default()
        };
        let request = ForwardRequest {
            envelope: MessageField::some(envelope),
            ..Default::default()
        };
        // The publisher queues it and retries while containerd is unreachable.
        if let Err(e) = self
            .publisher
            .forward(&TtrpcContext::default(), request)
            .await
        {
            tracing::warn!(topic = event.topic, error = %e, "publishing event failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use containerd_shim_protos::events::task::*;
    use containerd_shim_protos::protobuf::MessageFull;

    /// The name given without reflection is the one reflection gives (and containerd's
    /// typeurl registry expects), for every event the shim sends.
    fn named_as_reflection_names_it<E: Event + MessageFull + Default>() {
        let event = E::default();
        let out = Outgoing::new(&event).unwrap();
        assert_eq!(out.type_url, E::descriptor().full_name());
        assert_eq!(out.topic, event.topic());
        assert_eq!(out.value, event.write_to_bytes().unwrap());
    }

    #[test]
    fn every_task_event_is_named_as_containerd_knows_it() {
        named_as_reflection_names_it::<TaskCreate>();
        named_as_reflection_names_it::<TaskStart>();
        named_as_reflection_names_it::<TaskDelete>();
        named_as_reflection_names_it::<TaskExit>();
        named_as_reflection_names_it::<TaskOOM>();
        named_as_reflection_names_it::<TaskExecAdded>();
        named_as_reflection_names_it::<TaskExecStarted>();
        named_as_reflection_names_it::<TaskPaused>();
        named_as_reflection_names_it::<TaskResumed>();
    }

    #[test]
    fn an_event_keeps_its_fields() {
        let exit = TaskExit {
            container_id: "c1".into(),
            pid: 42,
            exit_status: 137,
            ..Default::default()
        };
        let out = Outgoing::new(&exit).unwrap();
        assert_eq!(out.topic, "/tasks/exit");
        let back = TaskExit::parse_from_bytes(&out.value).unwrap();
        assert_eq!(
            (back.container_id.as_str(), back.pid, back.exit_status),
            ("c1", 42, 137)
        );
    }
}
