//! Record framing per `--format`: what precedes the Avro body of a key or value, and where the
//! writer schemas go before the first record that uses them.
//!
//! * `avro`: single-object encoding (`C3 01` + CRC-64-AVRO fingerprint); the schemas go into
//!   `<topic>-schemas` in the same Kafka transaction as the first record that uses them
//!   ([`crate::sink::Sink::publish_schema`]).
//! * `confluent`: byte 0 + the 4-byte id the Schema Registry gave the schema under the
//!   topic-name strategy's subject. The schema is registered (idempotently) before any record
//!   is encoded with it, so a reader always finds it; a refusal (an incompatible `ALTER
//!   TABLE`) stops the producer before the first record of the new shape.
//! * `json`: no header; key and envelope are rendered as JSON by the same code that renders
//!   rtis-consumer's output ([`crate::avro::decode_to_json`] of the Avro body), so a value reads
//!   the same in every format.
//!
//! The partition of a record is murmur2 of its key bytes as written (Kafka's default
//! partitioner), so Java clients that re-key or join the topic co-partition with it.

use std::sync::Arc;

use crate::avro::{self, WriterSchema, SINGLE_OBJECT_MAGIC};
use crate::error::{Error, Result};
use crate::registry::{self, Part, Registry, RegistryError};
use crate::schema::TableSchema;

/// How this session frames its records.
#[derive(Debug, Clone, Default)]
pub enum Framing {
    #[default]
    SingleObject,
    Confluent {
        registry: Arc<Registry>,
        topic: String,
    },
    Json,
}

/// The headers of one table shape's keys and values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Headers {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    /// Render key and value as JSON instead of Avro.
    pub json: bool,
}

/// The single-object header of `schema`.
pub fn single_object(schema: &WriterSchema) -> Vec<u8> {
    let mut h = SINGLE_OBJECT_MAGIC.to_vec();
    h.extend_from_slice(&schema.fingerprint);
    h
}

impl Framing {
    pub fn name(&self) -> &'static str {
        match self {
            Framing::SingleObject => "avro",
            Framing::Confluent { .. } => "confluent",
            Framing::Json => "json",
        }
    }

    /// The headers for a table shape; for `confluent`, registers its schemas first (blocking:
    /// call it off the async workers). `changes` describes how the shape differs from the one
    /// before it (named in a refusal).
    pub fn headers_blocking(
        &self,
        table: &TableSchema,
        key: &WriterSchema,
        value: &WriterSchema,
        changes: &str,
    ) -> Result<Headers> {
        match self {
            Framing::SingleObject => Ok(Headers {
                key: single_object(key),
                value: single_object(value),
                json: false,
            }),
            Framing::Json => Ok(Headers {
                key: Vec::new(),
                value: Vec::new(),
                json: true,
            }),
            Framing::Confluent { registry, topic } => {
                let mut ids = [0u32; 2];
                // the value first: an incompatible change is usually a value change, and a
                // refused value must not leave a new key version behind
                for (i, (part, schema)) in [(Part::Value, value), (Part::Key, key)]
                    .into_iter()
                    .enumerate()
                {
                    let subject = registry::subject(topic, part);
                    ids[i] = registry
                        .register(&subject, &schema.json)
                        .map_err(|e| registry_error(e, table, &subject, changes))?;
                }
                Ok(Headers {
                    key: registry::confluent_header(ids[1]).to_vec(),
                    value: registry::confluent_header(ids[0]).to_vec(),
                    json: false,
                })
            }
        }
    }

    /// [`Framing::headers_blocking`] on the blocking pool.
    pub async fn headers(
        &self,
        table: &TableSchema,
        key: &WriterSchema,
        value: &WriterSchema,
        changes: String,
    ) -> Result<Headers> {
        if !matches!(self, Framing::Confluent { .. }) {
            return self.headers_blocking(table, key, value, &changes);
        }
        let (this, table, key, value) = (self.clone(), table.clone(), key.clone(), value.clone());
        tokio::task::spawn_blocking(move || this.headers_blocking(&table, &key, &value, &changes))
            .await
            .expect("schema registration")
    }
}

/// A registry failure as the producer's error: outages are retried, refusals stop it.
fn registry_error(e: RegistryError, table: &TableSchema, subject: &str, changes: &str) -> Error {
    match e {
        RegistryError::Unavailable { .. } => Error::RegistryUnavailable(format!(
            "registering the writer schema of `{}`.`{}` under subject {subject}: {e}",
            table.db, table.table
        )),
        RegistryError::Config(msg) => Error::Config(msg),
        RegistryError::Refused { .. } if e.is_setup() => Error::Config(format!(
            "--schema-registry-url: registering the writer schema of `{}`.`{}` under subject \
             {subject}: {e}. Check the URL (Apicurio: .../apis/ccompat/v7) and the credentials \
             (--schema-registry-user, RTIS_SCHEMA_REGISTRY_PASSWORD)",
            table.db, table.table
        )),
        RegistryError::Refused { status, .. } if status != 409 => Error::Schema(format!(
            "the schema registry refused the writer schema of `{}`.`{}` under subject {subject}: \
             {e}. Nothing of this shape was sent; the checkpoint stays before it",
            table.db, table.table
        )),
        RegistryError::Refused { .. } => Error::Schema(format!(
            "the schema registry refused the writer schema of `{}`.`{}` under subject {subject}{}: \
             {e}. Nothing of the new shape was sent; the checkpoint stays before it. Make the \
             change compatible with the subject's compatibility level (under BACKWARD: add \
             columns as NULL; the binlog does not carry column defaults), or change that level in the registry, then restart",
            table.db,
            table.table,
            if changes.is_empty() {
                String::new()
            } else {
                format!(" (the table changed: {changes})")
            }
        )),
    }
}

/// The `--format` a key or value was written in, by its first byte.
pub fn format_of(bytes: &[u8]) -> Option<&'static str> {
    match bytes.first()? {
        0xC3 => Some("avro"),
        &registry::CONFLUENT_MAGIC => Some("confluent"),
        b'{' => Some("json"),
        _ => None,
    }
}

/// Encodes a record's key into `out` (cleared first).
pub fn encode_key(
    out: &mut Vec<u8>,
    headers: &Headers,
    key: &WriterSchema,
    table: &TableSchema,
    row: &[crate::value::Datum],
) {
    out.clear();
    out.extend_from_slice(&headers.key);
    avro::put_key(out, table, row);
    if headers.json {
        to_json(out, key);
    }
}

/// Replaces the Avro body in `out` by its JSON rendering.
pub fn to_json(out: &mut Vec<u8>, schema: &WriterSchema) {
    let json = avro::decode_to_json(schema, out)
        .expect("rtis's own Avro encoding decodes with its writer schema");
    out.clear();
    serde_json::to_writer(&mut *out, &json).expect("JSON into a Vec");
}
