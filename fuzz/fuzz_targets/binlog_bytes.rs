//! What the producer parses from the source: MariaDB's compressed events and column values
//! (text of the snapshot path, row-image values of the binlog path) of every column kind.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rtis::fuzzing;

fuzz_target!(|data: &[u8]| fuzzing::binlog_bytes(data));
