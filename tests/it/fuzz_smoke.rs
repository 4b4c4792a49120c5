//! The fuzz targets of `fuzz/` on the stable toolchain: every target runs over its corpus
//! (`fuzz/corpus/<target>/`, seeded from `targets::seeds`) and then over many inputs mutated from
//! it by a seeded PRNG (bit flips, byte insertions and deletions, splices, interesting bytes and
//! numbers, line duplication). A target panics on a broken invariant, so "no panic" is the
//! assertion; a failure prints the seed, the iteration and the input to replay it.
//!
//! `TUIKUAN_FUZZ_ITERATIONS` sets the mutations per target (default 20 000);
//! `TUIKUAN_FUZZ_WRITE_CORPUS=1` writes the seeds into `fuzz/corpus/` (how the corpus started).

#[path = "../../fuzz/src/targets.rs"]
#[allow(dead_code)]
mod targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

/// The seeds plus whatever the corpus directory holds (cargo-fuzz adds to it).
fn corpus(target: &str) -> Vec<Vec<u8>> {
    let mut inputs = targets::seeds(target);
    if let Ok(entries) = std::fs::read_dir(corpus_dir(target)) {
        let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            if let Ok(bytes) = std::fs::read(&p) {
                inputs.push(bytes);
            }
        }
    }
    inputs
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const INTERESTING: &[&[u8]] = &[
    b"\0",
    b"\n",
    b"\r\n",
    b",",
    b"\"",
    b"`",
    b" ",
    b"-",
    b"+",
    b".",
    b"0",
    b"9",
    b"-1",
    b"0.00",
    b"1e9",
    b"99999999999999999999",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"1000000000000.01",
    b"CNY",
    b"JPY",
    b"XXX",
    b"SUCCESS",
    b"FAILED",
    b"REFUND",
    b"PAYOUT",
    b"FILE",
    b"\xEF\xBB\xBF",
    b"\xFF\xFE",
    b"\xC3\x28",
    b"\xE9\x80\x80",
    b"\xB0\xA1",
    b"2026-02-30T25:61:61+08:00",
    b"9999-12-31T23:59:59.999999999+14:00",
    b"\x7F",
];

fn mutate(rng: &mut Rng, input: &mut Vec<u8>, pool: &[Vec<u8>]) {
    for _ in 0..=rng.below(4) {
        let len = input.len();
        match rng.below(9) {
            0 if len > 0 => {
                let i = rng.below(len);
                input[i] ^= 1 << rng.below(8);
            }
            1 if len > 0 => {
                let i = rng.below(len);
                input[i] = rng.next() as u8;
            }
            2 => {
                let i = rng.below(len + 1);
                input.insert(i, rng.next() as u8);
            }
            3 if len > 0 => {
                let i = rng.below(len);
                let n = 1 + rng.below((len - i).min(16));
                input.drain(i..i + n);
            }
            4 => {
                let i = rng.below(len + 1);
                let word = INTERESTING[rng.below(INTERESTING.len())];
                input.splice(i..i, word.iter().copied());
            }
            5 if len > 0 => {
                // Overwrite a run with an interesting word.
                let i = rng.below(len);
                let word = INTERESTING[rng.below(INTERESTING.len())];
                let end = (i + word.len()).min(len);
                input.splice(i..end, word.iter().copied());
            }
            6 if !pool.is_empty() => {
                // Splice in a piece of another input.
                let other = &pool[rng.below(pool.len())];
                if !other.is_empty() {
                    let a = rng.below(other.len());
                    let b = a + rng.below(other.len() - a + 1);
                    let i = rng.below(len + 1);
                    input.splice(i..i, other[a..b].iter().copied());
                }
            }
            7 if len > 0 => {
                // Duplicate a line (or a chunk).
                let i = rng.below(len);
                let end = input[i..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map(|p| i + p + 1)
                    .unwrap_or(len);
                let chunk: Vec<u8> = input[i..end].to_vec();
                input.splice(end..end, chunk);
            }
            8 if len > 0 => {
                input.truncate(rng.below(len));
            }
            _ => input.push(rng.next() as u8),
        }
    }
    input.truncate(64 * 1024);
}

fn iterations() -> usize {
    std::env::var("TUIKUAN_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

fn run_target(name: &str, target: fn(&[u8]), seed: u64) {
    if std::env::var("TUIKUAN_FUZZ_WRITE_CORPUS").is_ok_and(|v| v == "1") {
        let dir = corpus_dir(name);
        std::fs::create_dir_all(&dir).unwrap();
        for (i, s) in targets::seeds(name).iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), s).unwrap();
        }
    }
    let pool = corpus(name);
    assert!(!pool.is_empty(), "{name} has no seeds");
    let check = |input: &[u8], what: &str| {
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| target(input))) {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!(
                "fuzz target {name} failed on {what}: {why}\ninput ({} bytes): {:?}",
                input.len(),
                String::from_utf8_lossy(input)
            );
        }
    };
    for (i, input) in pool.iter().enumerate() {
        check(input, &format!("corpus entry {i}"));
    }
    let mut rng = Rng(seed);
    for n in 0..iterations() {
        let mut input = pool[rng.below(pool.len())].clone();
        mutate(&mut rng, &mut input, &pool);
        check(&input, &format!("mutation {n} of seed {seed}"));
    }
}

macro_rules! fuzz_smoke {
    ($($name:ident => $seed:expr),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let (_, target) = targets::TARGETS
                    .iter()
                    .find(|(n, _)| *n == stringify!($name))
                    .expect("target exists");
                run_target(stringify!($name), *target, $seed);
            }
        )*
    };
}

fuzz_smoke!(
    recon_csv => 0xC5F1,
    recon_wechat => 0x3EC4,
    recon_unionpay => 0x0419,
    recon_alipay => 0xA11A,
    recon_detect => 0xDE7E,
    bank_clearing_csv => 0xBA4C,
    merchant_create_refund => 0x3EF0,
    money_parse => 0x3013,
    external_id => 0x1D5,
    bank_reference_id => 0xB4EF,
);

#[test]
fn every_target_is_covered() {
    let names: Vec<&str> = targets::TARGETS.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        names,
        [
            "recon_csv",
            "recon_wechat",
            "recon_unionpay",
            "recon_alipay",
            "recon_detect",
            "bank_clearing_csv",
            "merchant_create_refund",
            "money_parse",
            "external_id",
            "bank_reference_id"
        ]
    );
    for n in names {
        assert!(!targets::seeds(n).is_empty(), "{n}");
    }
}

/// The seeds are valid inputs: each parser accepts its seeds with records, each validator its
/// seeds — so the corpus starts where the interesting code is, past the first check.
#[test]
fn seeds_are_accepted() {
    use tuikuan_reconciliation::domain::inspect::inspect;
    use tuikuan_reconciliation::domain::{parse_all, CsvV1Parser, FileFormat, TextEncoding};
    for s in targets::seeds("recon_csv").iter().skip(1) {
        let (records, _) = parse_all(&CsvV1Parser, s).expect("csv seed parses");
        assert!(!records.is_empty());
    }
    for s in targets::seeds("bank_clearing_csv").iter().skip(1) {
        assert!(!tuikuan_bank::domain::parse_clearing_csv(s)
            .expect("bank csv seed parses")
            .is_empty());
    }
    let day = chrono::NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
    for (target, format) in [
        ("recon_wechat", FileFormat::WechatBill),
        ("recon_unionpay", FileFormat::UnionpayZm),
        ("recon_alipay", FileFormat::AlipayDetail),
    ] {
        for (i, s) in targets::seeds(target).iter().enumerate() {
            let report = inspect(s, None, TextEncoding::Detect, day);
            assert_eq!(report.format, Some(format), "{target} seed {i}");
            assert!(
                report.error.is_none(),
                "{target} seed {i}: {:?}",
                report.error
            );
            assert!(report.stats.records > 0, "{target} seed {i} has refunds");
        }
    }
    for s in targets::seeds("merchant_create_refund") {
        let text = String::from_utf8(s).unwrap();
        let f: Vec<&str> = text.splitn(5, '\n').collect();
        tuikuan_business::domain::RefundRequest::validate(f[0], f[1], f[2], f[3], f[4])
            .expect("refund seed is valid");
    }
    for s in targets::seeds("money_parse") {
        let text = String::from_utf8(s).unwrap();
        let (a, c) = text.split_once('\n').unwrap();
        tuikuan_kernel::Money::parse(a, c, "amount").expect("money seed is valid");
    }
}
