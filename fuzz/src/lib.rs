//! tuikuan's fuzz targets. Each function in [`targets`] takes arbitrary bytes and panics only on a
//! broken invariant: a parser or validator that panics, accepts what it must refuse, or refuses
//! without naming the line and field. `fuzz_targets/*.rs` hand them to libFuzzer; the stable test
//! suite (tests/it/fuzz_smoke.rs) includes `targets.rs` itself and runs a seeded mutation loop.

pub mod targets;
