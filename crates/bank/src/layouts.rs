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
