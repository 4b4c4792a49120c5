//! The text of bank files: encodings (UTF-8, GBK / GB18030) and byte-order marks, lines read one
//! at a time, amounts with a bounded number of decimals, and the content digest under which a copy
//! that differs only in its byte-order mark or its line endings is the same file.
//!
//! Banks send their files in the encoding of their platform: WeChat Pay bills come as UTF-8 (with
//! or without a byte-order mark) and, saved by Excel or older tools, as GBK; UnionPay's ZM file and
//! Alipay's 业务明细 are GBK. GBK text is decoded as GB18030, its superset (every GBK byte sequence
//! means the same in GB18030), strictly: an invalid sequence is an error naming the line, never a
//! replacement character.

use std::borrow::Cow;
use std::io::BufRead;

use rust_decimal::Decimal;
use sha2::{Digest, Sha256};
use tuikuan_kernel::{Error, Result};

use super::{line_error, MAX_LINE_BYTES};

/// The UTF-8 byte-order mark.
pub const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// How a file's text is to be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextEncoding {
    /// Decided from the file: a UTF-8 byte-order mark or the first line that is not plain ASCII
    /// (valid UTF-8 → UTF-8, otherwise GBK).
    #[default]
    Detect,
    Utf8,
    /// GBK, read as GB18030 (its superset).
    Gbk,
}

impl TextEncoding {
    /// `""` or `auto` (detect), `utf-8` / `utf8`, `gbk` / `gb2312` / `gb18030`.
    pub fn parse(s: &str) -> Result<TextEncoding> {
        match s.to_ascii_lowercase().as_str() {
            "" | "auto" => Ok(TextEncoding::Detect),
            "utf-8" | "utf8" => Ok(TextEncoding::Utf8),
            "gbk" | "gb2312" | "gb18030" => Ok(TextEncoding::Gbk),
            other => Err(Error::field(
                "encoding",
                format!("expected auto, utf-8 or gbk, found {other:?}"),
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TextEncoding::Detect => "auto",
            TextEncoding::Utf8 => "utf-8",
            TextEncoding::Gbk => "gbk",
        }
    }
}

/// Decodes the lines of one file in one encoding, deciding it on the way when asked to detect.
#[derive(Debug, Clone)]
pub struct LineDecoder {
    encoding: TextEncoding,
    /// Whether a line with text was seen (the byte-order mark is only allowed before it).
    started: bool,
}

impl LineDecoder {
    pub fn new(encoding: TextEncoding) -> LineDecoder {
        LineDecoder {
            encoding,
            started: false,
        }
    }

    /// The encoding decided so far (`Detect` while every line was plain ASCII).
    pub fn encoding(&self) -> TextEncoding {
        self.encoding
    }

    /// The encoding's name for reports: `ascii` when nothing decided it.
    pub fn name(&self) -> &'static str {
        match self.encoding {
            TextEncoding::Detect => "ascii",
            other => other.as_str(),
        }
    }

    /// Strips a UTF-8 byte-order mark from the first line (which then means UTF-8) and refuses
    /// UTF-16 marks. Returns the bytes that remain.
    pub fn strip_bom<'a>(&mut self, raw: &'a [u8], line: usize) -> Result<&'a [u8]> {
        if self.started {
            return Ok(raw);
        }
        if let Some(rest) = raw.strip_prefix(UTF8_BOM) {
            if self.encoding == TextEncoding::Gbk {
                return Err(line_error(
                    line,
                    "encoding",
                    "the file starts with a UTF-8 byte-order mark but was declared gbk",
                ));
            }
            self.encoding = TextEncoding::Utf8;
            return Ok(rest);
        }
        if raw.starts_with(b"\xFF\xFE") || raw.starts_with(b"\xFE\xFF") {
            return Err(line_error(
                line,
                "encoding",
                "UTF-16 is not supported (save the file as UTF-8 or GBK)",
            ));
        }
        Ok(raw)
    }

    /// Decodes one line (already without its line ending). The first call also handles a
    /// byte-order mark.
    pub fn decode<'a>(&mut self, raw: &'a [u8], line: usize) -> Result<Cow<'a, str>> {
        let raw = self.strip_bom(raw, line)?;
        self.started = true;
        if self.encoding == TextEncoding::Detect && !raw.is_ascii() {
            self.encoding = if std::str::from_utf8(raw).is_ok() {
                TextEncoding::Utf8
            } else {
                TextEncoding::Gbk
            };
        }
        decode_as(raw, self.encoding).ok_or_else(|| {
            line_error(
                line,
                "row",
                format!("is not valid {}", self.encoding.as_str()),
            )
        })
    }
}

/// Decodes bytes strictly in an encoding (`Detect` means UTF-8 here).
pub fn decode_as(raw: &[u8], encoding: TextEncoding) -> Option<Cow<'_, str>> {
    match encoding {
        TextEncoding::Gbk if !raw.is_ascii() => encoding_rs::GB18030
            .decode_without_bom_handling_and_without_replacement(raw)
            .map(|c| Cow::Owned(c.into_owned())),
        _ => std::str::from_utf8(raw).ok().map(Cow::Borrowed),
    }
}

/// Encodes text in an encoding (`Detect` means UTF-8). Characters GBK cannot hold become `?`.
pub fn encode_as(text: &str, encoding: TextEncoding) -> Vec<u8> {
    match encoding {
        TextEncoding::Gbk => encoding_rs::GB18030.encode(text).0.into_owned(),
        _ => text.as_bytes().to_vec(),
    }
}

/// Reads one line into `buf` without its `\n` / `\r\n`. `false` at the end of the input.
pub(crate) fn read_line(input: &mut dyn BufRead, buf: &mut Vec<u8>, line: usize) -> Result<bool> {
    buf.clear();
    let n = std::io::Read::take(&mut *input, MAX_LINE_BYTES as u64 + 2)
        .read_until(b'\n', buf)
        .map_err(|e| line_error(line, "row", format!("unreadable: {e}")))?;
    if n == 0 {
        return Ok(false);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
        if buf.last() == Some(&b'\r') {
            buf.pop();
        }
    } else if buf.len() > MAX_LINE_BYTES {
        return Err(line_error(
            line,
            "row",
            format!("longer than {MAX_LINE_BYTES} bytes"),
        ));
    } else if buf.last() == Some(&b'\r') {
        buf.pop();
    }
    Ok(true)
}

/// A decimal written plainly: an optional `-`, digits, and at most `max_decimals` decimals
/// (`12.50`, `-0.06`, `0.00600`, `3`). No `+`, exponent, spaces or thousands separators.
pub fn parse_decimal(raw: &str, max_decimals: u32) -> std::result::Result<Decimal, String> {
    let unsigned = raw.strip_prefix('-').unwrap_or(raw);
    let (whole, fraction) = match unsigned.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (unsigned, None),
    };
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let ok = digits(whole)
        && whole.len() <= 15
        && fraction.is_none_or(|f| digits(f) && f.len() <= max_decimals as usize);
    if !ok {
        return Err(format!(
            "{raw:?} is not an amount with at most {max_decimals} decimals"
        ));
    }
    raw.parse::<Decimal>().map_err(|e| format!("{raw:?}: {e}"))
}

/// A decimal in yuan with at most two decimals, as fen (minor units).
pub fn decimal_to_minor(value: Decimal) -> std::result::Result<i64, String> {
    let scaled = value * Decimal::from(100);
    if scaled.fract() != Decimal::ZERO {
        return Err(format!("{value} has more than two decimals"));
    }
    i64::try_from(scaled.trunc()).map_err(|_| format!("{value} is out of range"))
}

/// The SHA-256 of a file's content with the differences that do not change its meaning taken
/// out: a leading UTF-8 byte-order mark is dropped, `\r\n` and lone `\r` become `\n`, and a
/// non-empty file ends with `\n`. Two files with the same digest are the same file to a run.
#[derive(Debug, Clone)]
pub struct ContentDigest {
    hasher: Sha256,
    /// The first bytes, held until the byte-order mark question is settled.
    head: Vec<u8>,
    head_done: bool,
    /// The previous chunk ended with `\r`.
    pending_cr: bool,
    last: Option<u8>,
}

impl Default for ContentDigest {
    fn default() -> Self {
        ContentDigest::new()
    }
}

impl ContentDigest {
    pub fn new() -> ContentDigest {
        ContentDigest {
            hasher: Sha256::new(),
            head: Vec::with_capacity(3),
            head_done: false,
            pending_cr: false,
            last: None,
        }
    }

    /// The digest of a whole in-memory file.
    pub fn of(bytes: &[u8]) -> String {
        let mut d = ContentDigest::new();
        d.update(bytes);
        d.finish()
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        if !self.head_done {
            let take = (3 - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.head.len() < 3 {
                return;
            }
            self.settle_head();
        }
        self.feed(bytes);
    }

    fn settle_head(&mut self) {
        self.head_done = true;
        let head = std::mem::take(&mut self.head);
        let rest = head.strip_prefix(UTF8_BOM).unwrap_or(&head);
        self.feed(rest);
    }

    fn feed(&mut self, bytes: &[u8]) {
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if self.pending_cr {
                self.pending_cr = false;
                self.emit(b"\n");
                if b == b'\n' {
                    start = i + 1;
                    continue;
                }
            }
            if b == b'\r' {
                self.emit(&bytes[start..i]);
                self.pending_cr = true;
                start = i + 1;
            }
        }
        if start < bytes.len() {
            self.emit(&bytes[start..]);
        }
    }

    fn emit(&mut self, bytes: &[u8]) {
        if let Some(&b) = bytes.last() {
            self.last = Some(b);
            self.hasher.update(bytes);
        }
    }

    /// Lowercase hex.
    pub fn finish(mut self) -> String {
        if !self.head_done {
            self.settle_head();
        }
        if self.pending_cr {
            self.pending_cr = false;
            self.emit(b"\n");
        }
        if self.last.is_some_and(|b| b != b'\n') {
            self.emit(b"\n");
        }
        hex::encode(self.hasher.finalize())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_parse_and_detect() {
        assert_eq!(TextEncoding::parse("").unwrap(), TextEncoding::Detect);
        assert_eq!(TextEncoding::parse("AUTO").unwrap(), TextEncoding::Detect);
        assert_eq!(TextEncoding::parse("UTF-8").unwrap(), TextEncoding::Utf8);
        assert_eq!(TextEncoding::parse("gb18030").unwrap(), TextEncoding::Gbk);
        assert!(TextEncoding::parse("latin1").is_err());

        let gbk = encode_as("交易时间,商户号", TextEncoding::Gbk);
        let mut d = LineDecoder::new(TextEncoding::Detect);
        assert_eq!(d.decode(b"plain", 1).unwrap(), "plain");
        assert_eq!(d.name(), "ascii");
        assert_eq!(d.decode(&gbk, 2).unwrap(), "交易时间,商户号");
        assert_eq!(d.encoding(), TextEncoding::Gbk);
        // Once GBK, a UTF-8 line is refused rather than misread.
        let e = d.decode("退款".as_bytes(), 3).unwrap_err();
        assert!(e.message.contains("line 3: row: is not valid gbk"), "{e}");

        let mut u = LineDecoder::new(TextEncoding::Detect);
        let mut with_bom = UTF8_BOM.to_vec();
        with_bom.extend_from_slice(b"abc");
        assert_eq!(u.decode(&with_bom, 1).unwrap(), "abc");
        assert_eq!(u.encoding(), TextEncoding::Utf8);
        assert!(u.decode(&gbk, 2).is_err());

        let mut declared = LineDecoder::new(TextEncoding::Gbk);
        assert!(declared.decode(&with_bom, 1).is_err());
        assert!(LineDecoder::new(TextEncoding::Detect)
            .decode(b"\xFF\xFEa\0", 1)
            .unwrap_err()
            .message
            .contains("UTF-16"));
    }

    #[test]
    fn decimals_with_bounded_places() {
        assert_eq!(parse_decimal("12.50", 2).unwrap().to_string(), "12.50");
        assert_eq!(parse_decimal("-0.06", 2).unwrap().to_string(), "-0.06");
        assert_eq!(parse_decimal("0.00600", 6).unwrap().to_string(), "0.00600");
        assert_eq!(parse_decimal("3", 2).unwrap().to_string(), "3");
        for bad in [
            "", "1.", ".5", "1e2", "+1", "1,000", " 1", "--1", "0.001", "a",
        ] {
            assert!(parse_decimal(bad, 2).is_err(), "{bad}");
        }
        assert!(parse_decimal("0.0000001", 6).is_err());
        assert!(parse_decimal("1234567890123456", 2).is_err());
        assert_eq!(
            decimal_to_minor(parse_decimal("12.5", 2).unwrap()),
            Ok(1250)
        );
        assert!(decimal_to_minor(parse_decimal("0.001", 3).unwrap()).is_err());
    }

    #[test]
    fn digest_ignores_bom_and_line_endings_only() {
        let base = ContentDigest::of(b"a,b\nc,d\n");
        assert_eq!(ContentDigest::of(b"\xEF\xBB\xBFa,b\nc,d\n"), base);
        assert_eq!(ContentDigest::of(b"a,b\r\nc,d\r\n"), base);
        assert_eq!(ContentDigest::of(b"a,b\rc,d\r"), base);
        assert_eq!(ContentDigest::of(b"a,b\nc,d"), base);
        assert_ne!(ContentDigest::of(b"a,b\nc,e\n"), base);
        assert_ne!(ContentDigest::of(b"a,b\n\nc,d\n"), base);
        // Streaming in any chunks gives the same digest.
        let bytes = b"\xEF\xBB\xBFa,b\r\nc,d\r\n";
        for split in 0..bytes.len() {
            let mut d = ContentDigest::new();
            d.update(&bytes[..split]);
            d.update(&bytes[split..]);
            assert_eq!(d.finish(), base, "split at {split}");
        }
        assert_eq!(ContentDigest::of(b""), ContentDigest::of(b""));
        assert_ne!(ContentDigest::of(b""), ContentDigest::of(b"\n"));
    }
}
