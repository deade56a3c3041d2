//! The `etcd_record` fuzz target: see `grpc_failover_fuzz::etcd_record`. Under cargo-fuzz (`--cfg fuzzing`) a
//! libFuzzer entry point; otherwise a replay binary: `etcd_record FILE|DIR...` runs each input once.
#![cfg_attr(fuzzing, no_main)]

#[cfg(fuzzing)]
libfuzzer_sys::fuzz_target!(|data: &[u8]| grpc_failover_fuzz::etcd_record::run(data));

#[cfg(not(fuzzing))]
fn main() {
    grpc_failover_fuzz::replay_main("etcd_record", grpc_failover_fuzz::etcd_record::run);
}
