//! Integration tests: the whole chain in-process on port 0 with temporary databases, through the
//! public gRPC interfaces only, on SQLite and on PostgreSQL. One test binary, one module per area.

mod sandbox;

mod auditor;
mod bad_input;
mod bank_files;
mod bounded;
mod chain;
mod channels;
mod concurrency;
mod discovery;
mod error_refund;
mod faults;
mod fuzz_smoke;
mod idempotency;
mod inspect;
mod paid_once;
mod recovery;
mod reinstate;
mod reopen;
mod resolutions;
mod smoke;
mod staff;
mod stop;
mod trust;
