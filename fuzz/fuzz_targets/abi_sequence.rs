//! The `abi_sequence` fuzz target: see `grpc_failover_fuzz::abi_sequence`. Under cargo-fuzz (`--cfg fuzzing`) a
//! libFuzzer entry point; otherwise a replay binary: `abi_sequence FILE|DIR...` runs each input once.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| grpc_failover_fuzz::abi_sequence::run(data));

#[cfg(not(fuzzing))]
fn main() {
    grpc_failover_fuzz::replay_main("abi_sequence", grpc_failover_fuzz::abi_sequence::run);
}
