# tuikuan recipes (https://just.systems). Each is a plain cargo command you can also run by hand.

# Run the whole chain with the bank simulator and print a summary.
demo:
    cargo run --release -- demo

# Run all seven services in one process.
up:
    cargo run --release -- up

# The test suite (SQLite always; PostgreSQL when TUIKUAN_TEST_PG_URL or a local server answers).
test:
    cargo test --workspace

# What CI runs: installs and starts PostgreSQL, then the tests.
ci:
    bash .ci/run

lint:
    cargo fmt --all -- --check
    cargo clippy --workspace --all-targets -- -D warnings
    bash .ci/check-domain-purity

fmt:
    cargo fmt --all
