//! The `target` fuzz target: see `grpc_failover_fuzz::target`. Under cargo-fuzz (`--cfg fuzzing`) a
//! libFuzzer entry point; otherwise a replay binary: `target FILE|DIR...` runs each input once.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| grpc_failover_fuzz::target::run(data));

#[cfg(not(fuzzing))]
fn main() {
    grpc_failover_fuzz::replay_main("target", grpc_failover_fuzz::target::run);
}
