//! The consumer's decoding of untrusted record bytes: a key or value in any format rtis
//! writes, against the writer schemas of a table with every column kind, or against a schema
//! taken from the input itself (as a schema-topic entry or registry answer could be).
#![no_main]
use libfuzzer_sys::fuzz_target;
use rtis::fuzzing;

fuzz_target!(|data: &[u8]| fuzzing::consumer_decode(data));
