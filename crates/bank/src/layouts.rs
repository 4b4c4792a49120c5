//! The simulator's clearing file in the layout of a channel's real bank, so that the whole chain
//! reconciles the files banks really send: the platform's `tuikuan-csv-v1` (default), a WeChat Pay
//! bill (current or legacy REFUND layout), UnionPay's ZM file or Alipay's 业务明细. The layouts are
//! written by the reconciliation center's own writers (`tuikuan_reconciliation::domain`), one
//! definition per layout.
//!
//! Every row is reported by the id the platform submitted it under (the attempt's bank reference
//! id), as the real banks do (`out_refund_no`, `orderId`, `out_request_no`). What a real bank's file
//! does not list is left out the same way: ZM and 业务明细 list cleared business only, so a failed
//! refund does not appear (reconciliation keeps it in suspense until the channel's window passes).

use chrono::NaiveDate;
use tuikuan_kernel::{Currency, Error, Result};
use tuikuan_reconciliation::domain::{
    alipay, unionpay, wechat, BankRecord, BankRecordStatus, RecordKind, TextEncoding, WechatLayout,
    ALIPAY_FORMAT, UNIONPAY_FORMAT, WECHAT_FORMAT,
};

use crate::domain::{write_clearing_csv, ClearingRow, ClearingStatus, CLEARING_FILE_FORMAT};

/// Bytes of the ZM file's 商户订单号 field.
const ZM_ORDER_ID_BYTES: usize = 32;

/// A layout the simulator writes its clearing files in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Layout {
    /// `tuikuan-csv-v1` (docs/clearing-file.md).
    #[default]
    Csv,
    /// WeChat Pay REFUND bill, current layout (UTF-8).
    Wechat,
    /// WeChat Pay REFUND bill, legacy layout (UTF-8).
    WechatLegacy,
    /// UnionPay ZM file (GBK).
    Unionpay,
    /// Alipay 业务明细 (GBK).
    Alipay,
}

impl Layout {
    pub const ALL: [Layout; 5] = [
        Layout::Csv,
        Layout::Wechat,
        Layout::WechatLegacy,
        Layout::Unionpay,
        Layout::Alipay,
    ];

    /// `csv`, `wechat`, `wechat-legacy`, `unionpay`, `alipay`.
    pub fn parse(s: &str) -> Result<Layout> {
        Layout::ALL
            .iter()
            .copied()
            .find(|l| l.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| {
                Error::field(
                    "clearing_formats",
                    format!(
                        "{:?} is not csv, wechat, wechat-legacy, unionpay or alipay",
                        s.chars().take(32).collect::<String>()
                    ),
                )
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Csv => "csv",
            Layout::Wechat => "wechat",
            Layout::WechatLegacy => "wechat-legacy",
            Layout::Unionpay => "unionpay",
            Layout::Alipay => "alipay",
        }
    }

    /// The format name the bank declares with the file (what reconciliation reads it as).
    pub fn format_name(self) -> &'static str {
        match self {
            Layout::Csv => CLEARING_FILE_FORMAT,
            Layout::Wechat | Layout::WechatLegacy => WECHAT_FORMAT,
            Layout::Unionpay => UNIONPAY_FORMAT,
            Layout::Alipay => ALIPAY_FORMAT,
        }
    }

    /// The extension of the file kept in the clearing directory.
    pub fn extension(self) -> &'static str {
        match self {
            Layout::Csv | Layout::Wechat | Layout::WechatLegacy | Layout::Alipay => "csv",
            Layout::Unionpay => "txt",
        }
    }
}

fn record(row: &ClearingRow, line: usize) -> BankRecord {
    BankRecord {
        kind: RecordKind::Refund,
        id: row.id.clone(),
        bank_ref: row.bank_ref.clone(),
        original_ref: String::new(),
        channel: String::new(),
        amount: row.amount,
        status: match row.status {
            ClearingStatus::Success => BankRecordStatus::Success,
            ClearingStatus::Failed => BankRecordStatus::Failed,
        },
        completed_at: row.completed_at,
        reason: row.reason.clone(),
        line,
    }
}

/// The clearing file of `rows` (one channel, one business date) in `layout`.
pub fn render(layout: Layout, rows: &[ClearingRow], date: NaiveDate) -> Result<Vec<u8>> {
    if layout == Layout::Csv {
        return write_clearing_csv(rows);
    }
    if matches!(layout, Layout::Unionpay | Layout::Alipay) {
        if let Some(r) = rows.iter().find(|r| r.amount.currency() != Currency::Cny) {
            return Err(Error::field(
                "clearing_formats",
                format!(
                    "a {} file is in CNY only; transaction {} is in {}",
                    layout.as_str(),
                    r.id,
                    r.amount.currency()
                ),
            ));
        }
    }
    if layout == Layout::Unionpay {
        // The ZM file's 商户订单号 is 32 bytes: a longer id would be cut and could never match.
        if let Some(r) = rows.iter().find(|r| r.id.len() > ZM_ORDER_ID_BYTES) {
            return Err(Error::field(
                "clearing_formats",
                format!(
                    "a unionpay file reports refunds by orderId (at most {ZM_ORDER_ID_BYTES} \
                     bytes); {:?} is longer: give the channel the unionpay id scheme",
                    r.id.chars().take(64).collect::<String>()
                ),
            ));
        }
    }
    let records: Vec<BankRecord> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| record(r, i + 2))
        .collect();
    Ok(match layout {
        Layout::Csv => Vec::new(),
        Layout::Wechat => {
            wechat::write_bill(WechatLayout::CurrentRefund, TextEncoding::Utf8, &records)
        }
        Layout::WechatLegacy => {
            wechat::write_bill(WechatLayout::LegacyRefund, TextEncoding::Utf8, &records)
        }
        Layout::Unionpay => unionpay::write_zm(&records, TextEncoding::Gbk),
        Layout::Alipay => alipay::write_detail(&records, date, TextEncoding::Gbk),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Utc};
    use tuikuan_kernel::Money;
    use tuikuan_reconciliation::domain::inspect::parse_bytes;
    use tuikuan_reconciliation::domain::{FileFormat, ParseOptions};

    use crate::domain::RecordType;

    fn row(id: &str, amount: &str, status: ClearingStatus) -> ClearingRow {
        ClearingRow {
            record_type: RecordType::Refund,
            id: id.into(),
            bank_ref: "201125100000000000001".into(),
            channel: "CUP".into(),
            amount: Money::parse(amount, "CNY", "amount").unwrap(),
            status,
            completed_at: Utc.with_ymd_and_hms(2026, 11, 25, 3, 0, 5).unwrap(),
            reason: String::new(),
        }
    }

    #[test]
    fn every_layout_reads_back_as_written() {
        let date = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        let rows = [
            row(
                "TK0YH2NOHIZ9PFOXJ6I3EYO2H6KRVA1I",
                "12.50",
                ClearingStatus::Success,
            ),
            row(
                "TK1000000000000000000000000000AB",
                "3.13",
                ClearingStatus::Failed,
            ),
        ];
        for layout in Layout::ALL {
            let bytes = render(layout, &rows, date).unwrap();
            let format = FileFormat::parse(layout.format_name()).unwrap();
            let options = ParseOptions {
                encoding: tuikuan_reconciliation::domain::TextEncoding::Detect,
                business_date: date,
            };
            let (records, stats) = parse_bytes(&bytes, format, options)
                .unwrap_or_else(|e| panic!("{}: {e}", layout.as_str()));
            let lists_failures = !matches!(layout, Layout::Unionpay | Layout::Alipay);
            assert_eq!(
                records.len(),
                if lists_failures { 2 } else { 1 },
                "{layout:?}"
            );
            assert_eq!(records[0].id, rows[0].id, "{layout:?}");
            assert_eq!(records[0].amount, rows[0].amount, "{layout:?}");
            assert_eq!(records[0].status, BankRecordStatus::Success, "{layout:?}");
            if lists_failures {
                assert_eq!(records[1].status, BankRecordStatus::Failed, "{layout:?}");
            }
            if matches!(layout, Layout::Unionpay | Layout::Alipay) {
                assert_eq!(stats.encoding, "gbk", "{layout:?}");
            }
            assert_eq!(Layout::parse(layout.as_str()).unwrap(), layout);
        }
    }

    #[test]
    fn files_that_could_not_be_matched_are_refused() {
        let date = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
        // A refund id does not fit the ZM file's 32-byte 商户订单号.
        let long = row(
            "rf_0190c6a4e3b87c2d9f0a1b2c3d4e5f60",
            "1.00",
            ClearingStatus::Success,
        );
        let e = render(Layout::Unionpay, std::slice::from_ref(&long), date).unwrap_err();
        assert!(e.message.contains("orderId"), "{}", e.message);
        assert!(render(Layout::Wechat, std::slice::from_ref(&long), date).is_ok());
        let mut usd = row("TK1", "1.00", ClearingStatus::Success);
        usd.amount = Money::parse("1.00", "USD", "amount").unwrap();
        let e = render(Layout::Alipay, &[usd], date).unwrap_err();
        assert!(e.message.contains("CNY only"), "{}", e.message);
        let e = Layout::parse("swift").unwrap_err();
        assert!(e.message.starts_with("clearing_formats: "), "{}", e.message);
    }
}
