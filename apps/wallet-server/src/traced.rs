//! Spans around what a service does off its requests: one
//! `consumer.event` span per event a consumer handles, and one
//! `relay.publish` span per event a relay publishes, each naming its
//! transfer, event and correlation id.

use async_trait::async_trait;
use tracing::Span;
use wallet_core::event::Envelope;
use wallet_core::ports::{BusError, Message, Payload, Publisher};
use wallet_core::runtime::{EventHandler, HandleError, Handled};

/// The span of one event handled by consumer group `group`.
fn event_span(group: &str, event: &Envelope) -> Span {
    tracing::info_span!(
        "consumer.event",
        otel.kind = "consumer",
        group,
        event_type = event.event.event_type(),
        transfer_id = %event.transfer_id,
        event_id = %event.event_id,
        correlation_id = %event.correlation_id,
    )
}

/// The span of one event a relay of `group` publishes to `topic`.
fn publish_span(group: &str, topic: &str, event: &Envelope) -> Span {
    tracing::info_span!(
        "relay.publish",
        otel.kind = "producer",
        group,
        topic,
        event_type = event.event.event_type(),
        transfer_id = %event.transfer_id,
        event_id = %event.event_id,
        correlation_id = %event.correlation_id,
    )
}

/// An [`EventHandler`] whose events are each handled in a span of their
/// own, open while the batch they came in is handled.
#[derive(Clone)]
pub struct TracedHandler<H> {
    inner: H,
    group: String,
}

impl<H> TracedHandler<H> {
    /// `inner`, handling for consumer group `group`.
    pub fn new(inner: H, group: &str) -> TracedHandler<H> {
        TracedHandler {
            inner,
            group: group.to_owned(),
        }
    }
}

#[async_trait]
impl<H: EventHandler> EventHandler for TracedHandler<H> {
    async fn handle(&self, batch: &[Envelope]) -> Result<Handled, HandleError> {
        let spans: Vec<Span> = batch.iter().map(|e| event_span(&self.group, e)).collect();
        let handled = self.inner.handle(batch).await;
        drop(spans);
        handled
    }
}

/// A [`Publisher`] for a relay: each event it publishes goes out in a
/// span of its own, open until the broker has the batch.
#[derive(Clone)]
pub struct TracedPublisher<P> {
    inner: P,
    group: String,
}

impl<P> TracedPublisher<P> {
    /// `inner`, publishing for the relay of `group`.
    pub fn new(inner: P, group: &str) -> TracedPublisher<P> {
        TracedPublisher {
            inner,
            group: group.to_owned(),
        }
    }
}

#[async_trait]
impl<P: Publisher> Publisher for TracedPublisher<P> {
    async fn publish(&self, messages: &[Message]) -> Result<(), BusError> {
        let spans: Vec<Span> = messages
            .iter()
            .filter_map(|m| match &m.payload {
                Payload::Event(event) => Some(publish_span(&self.group, &m.topic, event)),
                Payload::Bytes(_) => None,
            })
            .collect();
        let published = self.inner.publish(messages).await;
        drop(spans);
        published
    }
}
