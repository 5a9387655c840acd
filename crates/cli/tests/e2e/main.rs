//! The end-to-end tests, in one test binary (each binary links llama.cpp and
//! the TVM once): whole networks on loopback, started through the devnet
//! crate or as `cocoon` processes, spoken to over the wire. `cuts.rs` has a
//! binary of its own (its counting global allocator measures the heap).

mod attest;
mod bad_input;
mod binary;
mod books;
mod chain_reads;
mod choices;
mod closing;
mod controls;
mod doctor;
mod failover;
mod faults;
mod freshness;
mod key_manager;
mod logprobs;
mod malicious_proxy;
mod malicious_worker;
mod market;
mod network;
mod observability;
mod open_market;
mod openai_sdk;
mod overload;
mod pages;
mod prices;
mod proxies;
mod real_model;
mod reasoning;
mod restart;
mod root_cli;
mod rotation;
mod sealing;
mod settlement;
mod simulation;
mod structured;
mod summarize;
mod tool_calls;
mod trust_root;
mod wallet;
