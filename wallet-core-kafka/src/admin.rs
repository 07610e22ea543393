//! Topic admin: creates the event topics and the dead-letter topics at
//! start, idempotently, so services never depend on the broker creating
//! topics on first use (with its own partition count).

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use wallet_core::ports::BusError;

use crate::publisher::bus_error;
use crate::settings::KafkaSettings;

/// Creates every topic of [`KafkaSettings::all_topics`] with
/// [`KafkaSettings::partitions`] partitions. Topics that exist are left as
/// they are (their partition count is not changed). Safe to call from every
/// instance at every start.
pub async fn ensure_topics(settings: &KafkaSettings) -> Result<(), BusError> {
    create_topics(settings, &settings.all_topics()).await
}

/// Creates the topics `names` with the settings' partition count and
/// replication factor; existing ones are fine.
pub async fn create_topics(settings: &KafkaSettings, names: &[String]) -> Result<(), BusError> {
    if names.is_empty() {
        return Ok(());
    }
    let admin: AdminClient<DefaultClientContext> = settings
        .admin_config()
        .create()
        .map_err(|e| bus_error("creating the admin client", &e))?;
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| {
            NewTopic::new(
                name,
                settings.partitions,
                TopicReplication::Fixed(settings.replication_factor),
            )
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(settings.request_timeout));
    let results = admin
        .create_topics(&topics, &options)
        .await
        .map_err(|e| bus_error("creating topics", &e))?;
    for result in results {
        match result {
            Ok(name) => {
                tracing::info!(topic = %name, partitions = settings.partitions, "topic created")
            }
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(BusError(format!("creating topic {name}: {code}")));
            }
        }
    }
    Ok(())
}
