//! rtis (RealTimeIncrementalSync): MySQL/MariaDB binlog change-data-capture to Kafka, as Avro.
//!
//! Stages, one module each: [`preflight`] (source checks), [`schema`] (columns → Avro types),
//! [`value`] (value conversion shared by binlog and snapshot), [`avro`] (encoding),
//! [`replication`] (binlog → records; [`compressed`] turns MariaDB's compressed events back
//! into plain ones), [`sink`] (Kafka transactions with the checkpoint),
//! [`kafka`] (broker), [`checkpoint`] (SQLite),
//! [`pipeline`] (wiring, no logic of its own) and [`consumer`] (Kafka → JSON lines).

pub mod admin;
pub mod avro;
pub mod checkpoint;
pub mod compressed;
pub mod config;
pub mod consumer;
pub mod election;
pub mod error;
pub mod framing;
pub mod fuzzing;
pub mod kafka;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod position;
pub mod preflight;
pub mod registry;
pub mod replication;
pub mod schema;
pub mod sink;
pub mod snapshot;
pub mod value;

pub use error::{Error, Result};
