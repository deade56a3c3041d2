//! The `metadata` fuzz target: see `grpc_failover_fuzz::metadata`. Under cargo-fuzz (`--cfg fuzzing`) a
//! libFuzzer entry point; otherwise a replay binary: `metadata FILE|DIR...` runs each input once.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| grpc_failover_fuzz::metadata::run(data));

#[cfg(not(fuzzing))]
fn main() {
    grpc_failover_fuzz::replay_main("metadata", grpc_failover_fuzz::metadata::run);
}
