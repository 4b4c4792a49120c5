//! File-upload (上传文件退款) and offline (线下退款) batches: banks' spreadsheet templates, numbered
//! immutable batches with their rows, the batch state machine and the spreadsheet's cell model
//! ([`render`]), which `crate::sheet` writes as .xlsx. Pure: no storage, no RPC, no file format.

use chrono::format::{Item, StrftimeItems};
use chrono::NaiveDate;
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::{Currency, Error, ErrorCode, Money, Result};

use super::{mask_card, validate_text, Outcome, RefundMethod, MAX_TEXT_LEN};

macro_rules! simple_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $s:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $s),+
                }
            }

            pub fn parse(s: &str) -> Option<$name> {
                $name::ALL.iter().copied().find(|v| v.as_str() == s)
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

simple_enum!(
    /// A batch's life: generated (the file exists), then uploaded (file-upload) or sent (offline).
    BatchStatus {
        Generated => "GENERATED",
        Uploaded => "UPLOADED",
        Sent => "SENT",
    }
);

simple_enum!(
    /// A row's life: in the file, handed to the bank with its batch, or failed.
    RowStatus {
        Included => "INCLUDED",
        Submitted => "ROW_SUBMITTED",
        Failed => "ROW_FAILED",
    }
);

simple_enum!(
    /// How a template writes amounts.
    AmountFormat {
        /// Decimal in major units with the currency's decimals (12.50), a number cell.
        Yuan => "YUAN",
        /// Integer minor units (1250), a number cell.
        Fen => "FEN",
    }
);

simple_enum!(
    /// What a template column shows.
    TemplateField {
        RowNo => "ROW_NO",
        BatchId => "BATCH_ID",
        /// The row id (`{batch_id}-{line:04}`), which the bank reports the row by.
        RowId => "ROW_ID",
        RefundId => "REFUND_ID",
        OrderNo => "ORDER_NO",
        CardNo => "CARD_NO",
        HolderName => "HOLDER_NAME",
        Amount => "AMOUNT",
        Currency => "CURRENCY",
        Date => "DATE",
        Reason => "REASON",
    }
);

/// The status a marked batch of `method` takes.
pub fn marked_status(method: RefundMethod) -> Option<BatchStatus> {
    match method {
        RefundMethod::FileUpload => Some(BatchStatus::Uploaded),
        RefundMethod::Offline => Some(BatchStatus::Sent),
        RefundMethod::Interface | RefundMethod::Payout => None,
    }
}

/// One column of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateColumn {
    pub header: String,
    pub field: TemplateField,
}

/// A bank's spreadsheet template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BankTemplate {
    pub bank_code: String,
    pub sheet_name: String,
    pub columns: Vec<TemplateColumn>,
    /// chrono format of the DATE column.
    pub date_format: String,
    pub amount_format: AmountFormat,
}

/// The most columns a template may have.
pub const MAX_TEMPLATE_COLUMNS: usize = 32;

/// The longest sheet name a spreadsheet allows.
pub const MAX_SHEET_NAME_LEN: usize = 31;

fn col(header: &str, field: TemplateField) -> TemplateColumn {
    TemplateColumn {
        header: header.to_string(),
        field,
    }
}

impl BankTemplate {
    /// Checks the template: bank code, sheet name (1..=31 characters, none of `[]:*?/\`), 1..=32
    /// columns with headers, an AMOUNT column, and a date format chrono understands.
    pub fn validate(&self) -> Result<()> {
        validate_external_id(&self.bank_code, "bank_code")?;
        let name_len = self.sheet_name.chars().count();
        if name_len == 0 || name_len > MAX_SHEET_NAME_LEN {
            return Err(Error::field(
                "sheet_name",
                format!("must be 1 to {MAX_SHEET_NAME_LEN} characters"),
            ));
        }
        if self
            .sheet_name
            .chars()
            .any(|c| "[]:*?/\\".contains(c) || c.is_control())
        {
            return Err(Error::field(
                "sheet_name",
                "must not contain [ ] : * ? / \\ or control characters",
            ));
        }
        if self.columns.is_empty() || self.columns.len() > MAX_TEMPLATE_COLUMNS {
            return Err(Error::field(
                "columns",
                format!("must have 1 to {MAX_TEMPLATE_COLUMNS} columns"),
            ));
        }
        for c in &self.columns {
            if c.header.trim().is_empty() {
                return Err(Error::field("columns", "every column needs a header"));
            }
            validate_text(&c.header, "columns")?;
        }
        if !self
            .columns
            .iter()
            .any(|c| c.field == TemplateField::Amount)
        {
            return Err(Error::field("columns", "an AMOUNT column is required"));
        }
        if self.date_format.is_empty()
            || self.date_format.len() > MAX_TEXT_LEN
            || StrftimeItems::new(&self.date_format).any(|i| matches!(i, Item::Error))
        {
            return Err(Error::field(
                "date_format",
                "must be a chrono format such as %Y-%m-%d",
            ));
        }
        Ok(())
    }

    /// The built-in template of a bank, if tuikuan ships one: ICBC (Chinese headers, `%Y-%m-%d`,
    /// amounts in yuan) and CCB (English headers in another order, `%Y%m%d`, amounts in fen).
    pub fn builtin(bank_code: &str) -> Option<BankTemplate> {
        use TemplateField::*;
        match bank_code {
            "ICBC" => Some(BankTemplate {
                bank_code: "ICBC".into(),
                sheet_name: "退款明细".into(),
                columns: vec![
                    col("序号", RowNo),
                    col("明细编号", RowId),
                    col("退款单号", RefundId),
                    col("原订单号", OrderNo),
                    col("收款卡号", CardNo),
                    col("收款人", HolderName),
                    col("金额(元)", Amount),
                    col("币种", Currency),
                    col("日期", Date),
                ],
                date_format: "%Y-%m-%d".into(),
                amount_format: AmountFormat::Yuan,
            }),
            "CCB" => Some(BankTemplate {
                bank_code: "CCB".into(),
                sheet_name: "REFUNDS".into(),
                columns: vec![
                    col("Value Date", Date),
                    col("Ref No", RowId),
                    col("Payee Account", CardNo),
                    col("Payee Name", HolderName),
                    col("Amount (fen)", Amount),
                    col("Merchant Order", OrderNo),
                    col("Refund Id", RefundId),
                    col("Line", RowNo),
                ],
                date_format: "%Y%m%d".into(),
                amount_format: AmountFormat::Fen,
            }),
            _ => None,
        }
    }

    /// The generic template for a bank without a configured or built-in one.
    pub fn generic(bank_code: &str) -> BankTemplate {
        use TemplateField::*;
        BankTemplate {
            bank_code: bank_code.to_string(),
            sheet_name: "Refunds".into(),
            columns: vec![
                col("No", RowNo),
                col("Row Id", RowId),
                col("Batch", BatchId),
                col("Refund Id", RefundId),
                col("Order No", OrderNo),
                col("Card No", CardNo),
                col("Holder Name", HolderName),
                col("Amount", Amount),
                col("Currency", Currency),
                col("Date", Date),
            ],
            date_format: "%Y-%m-%d".into(),
            amount_format: AmountFormat::Yuan,
        }
    }

    /// The built-in template of the bank, else the generic one.
    pub fn default_for(bank_code: &str) -> BankTemplate {
        BankTemplate::builtin(bank_code).unwrap_or_else(|| BankTemplate::generic(bank_code))
    }
}

/// `B{yyyymmdd}-{BANK}-{METHOD}-{nn}`.
pub fn batch_id(date: NaiveDate, bank_code: &str, method: RefundMethod, sequence: u32) -> String {
    format!(
        "B{}-{bank_code}-{method}-{sequence:02}",
        date.format("%Y%m%d")
    )
}

/// `{batch_id}-{line:04}`.
pub fn row_id(batch_id: &str, line: u32) -> String {
    format!("{batch_id}-{line:04}")
}

/// One refund in a batch. Its `Debug` masks the card.
#[derive(Clone, PartialEq, Eq)]
pub struct BatchRow {
    pub row_id: String,
    pub batch_id: String,
    pub refund_id: String,
    /// The order's attempt this row is.
    pub attempt: u32,
    /// 1, 2, ... within the batch.
    pub line: u32,
    pub order_no: String,
    pub amount: Money,
    /// Full card number (the bank needs it); shown masked everywhere else.
    pub card_no: String,
    pub holder_name: String,
    pub status: RowStatus,
    pub reason: String,
}

impl BatchRow {
    pub fn card_masked(&self) -> String {
        mask_card(&self.card_no)
    }
}

impl std::fmt::Debug for BatchRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchRow")
            .field("row_id", &self.row_id)
            .field("batch_id", &self.batch_id)
            .field("refund_id", &self.refund_id)
            .field("attempt", &self.attempt)
            .field("line", &self.line)
            .field("order_no", &self.order_no)
            .field("amount", &self.amount)
            .field("card_no", &self.card_masked())
            .field("status", &self.status)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

/// A numbered, immutable batch of one bank, channel, method, currency and date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub batch_id: String,
    pub bank_code: String,
    pub channel: String,
    pub method: RefundMethod,
    pub date: NaiveDate,
    pub sequence: u32,
    pub status: BatchStatus,
    pub currency: Currency,
    pub rows: Vec<BatchRow>,
    pub file_name: String,
    pub file_sha256: String,
    pub generated_at_ms: i64,
    pub marked_at_ms: Option<i64>,
    pub marked_by: String,
    pub note: String,
    /// Whether the bank (simulator) received the rows (SubmitFileBatch succeeded).
    pub bank_delivered: bool,
    pub bank_error: String,
}

impl Batch {
    /// The sum of the rows' amounts.
    pub fn total(&self) -> Result<Money> {
        self.rows
            .iter()
            .try_fold(Money::zero(self.currency), |sum, r| {
                sum.checked_add(&r.amount)
            })
    }

    /// Staff uploaded (file-upload) or sent (offline) the file. The status must suit the method
    /// (`INVALID_ARGUMENT` otherwise); marking again with the same status is
    /// [`Outcome::Unchanged`].
    pub fn mark(
        &mut self,
        status: BatchStatus,
        operator: &str,
        note: &str,
        now_ms: i64,
    ) -> Result<Outcome> {
        let wanted = marked_status(self.method).ok_or_else(|| {
            Error::internal(format!(
                "batch {} has method {}",
                self.batch_id, self.method
            ))
        })?;
        if status != wanted {
            return Err(Error::field(
                "status",
                format!("a {} batch is marked {wanted}, not {status}", self.method),
            ));
        }
        if self.status == status {
            return Ok(Outcome::Unchanged);
        }
        if self.status != BatchStatus::Generated {
            return Err(Error::new(
                ErrorCode::InvalidStateTransition,
                format!("batch {} is already {}", self.batch_id, self.status),
            ));
        }
        self.status = status;
        self.marked_at_ms = Some(now_ms);
        self.marked_by = operator.to_string();
        self.note = note.to_string();
        for r in &mut self.rows {
            if r.status == RowStatus::Included {
                r.status = RowStatus::Submitted;
            }
        }
        Ok(Outcome::Changed)
    }
}

/// One cell of the rendered spreadsheet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cell {
    /// A text cell (ids, card numbers, names: never numbers, so no digit is lost).
    Text(String),
    /// A whole number cell.
    Integer(i64),
    /// A decimal number cell shown with `decimals` places; `value` is its exact decimal text.
    Decimal { value: String, decimals: u32 },
}

/// The spreadsheet of a batch: a header row, one row per refund, then, after an empty row, a
/// summary of the row count and the total amount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SheetModel {
    pub sheet_name: String,
    pub header: Vec<String>,
    pub rows: Vec<Vec<Cell>>,
    pub summary: Vec<(String, Cell)>,
}

/// The summary's labels.
pub const SUMMARY_COUNT_LABEL: &str = "笔数 COUNT";
pub const SUMMARY_TOTAL_LABEL: &str = "总金额 TOTAL";

fn amount_cell(amount: &Money, format: AmountFormat) -> Cell {
    match format {
        AmountFormat::Yuan => Cell::Decimal {
            value: amount.amount_string(),
            decimals: amount.currency().decimals(),
        },
        AmountFormat::Fen => Cell::Integer(amount.to_minor()),
    }
}

/// Renders a batch in a template.
pub fn render(template: &BankTemplate, batch: &Batch) -> Result<SheetModel> {
    let date = batch.date.format(&template.date_format).to_string();
    let rows = batch
        .rows
        .iter()
        .map(|r| {
            template
                .columns
                .iter()
                .map(|c| match c.field {
                    TemplateField::RowNo => Cell::Integer(i64::from(r.line)),
                    TemplateField::BatchId => Cell::Text(batch.batch_id.clone()),
                    TemplateField::RowId => Cell::Text(r.row_id.clone()),
                    TemplateField::RefundId => Cell::Text(r.refund_id.clone()),
                    TemplateField::OrderNo => Cell::Text(r.order_no.clone()),
                    TemplateField::CardNo => Cell::Text(r.card_no.clone()),
                    TemplateField::HolderName => Cell::Text(r.holder_name.clone()),
                    TemplateField::Amount => amount_cell(&r.amount, template.amount_format),
                    TemplateField::Currency => Cell::Text(r.amount.currency().code().to_string()),
                    TemplateField::Date => Cell::Text(date.clone()),
                    TemplateField::Reason => Cell::Text(r.reason.clone()),
                })
                .collect()
        })
        .collect();
    let count = i64::try_from(batch.rows.len()).unwrap_or(i64::MAX);
    Ok(SheetModel {
        sheet_name: template.sheet_name.clone(),
        header: template.columns.iter().map(|c| c.header.clone()).collect(),
        rows,
        summary: vec![
            (SUMMARY_COUNT_LABEL.to_string(), Cell::Integer(count)),
            (
                SUMMARY_TOTAL_LABEL.to_string(),
                amount_cell(&batch.total()?, template.amount_format),
            ),
        ],
    })
}

/// Whether failing spreadsheet row `row_id` by hand fails `order`, the row's refund: `Ok(false)`
/// when the row is not the order's current attempt or the order is FAILED already (the row alone
/// is marked); refused when the order is SUCCEEDED (`INVALID_STATE_TRANSITION`: the customer was
/// paid, the row stays as it is) or the bank says it paid the attempt (`BANK_MAY_HAVE_PAID`).
pub fn row_fails_order(order: &super::RefundOrder, row_id: &str) -> Result<bool> {
    if order.bank_reference_id != row_id {
        return Ok(false);
    }
    match order.refund_status {
        super::RefundStatus::Succeeded => Err(Error::new(
            ErrorCode::InvalidStateTransition,
            format!(
                "refund {} of row {row_id} is SUCCEEDED: the bank paid it, so its row is not \
                 failed by hand (a wrong payment is a new case for the bank, not a failure)",
                order.refund_id
            ),
        )),
        s if s.is_final() => Ok(false),
        _ => {
            order.check_not_paid("failing the spreadsheet row")?;
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(y: i32, m: u32, day: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, day).unwrap()
    }

    pub(crate) fn batch() -> Batch {
        let id = batch_id(d(2026, 11, 24), "ICBC", RefundMethod::FileUpload, 1);
        let row = |line: u32, minor: i64| BatchRow {
            row_id: row_id(&id, line),
            batch_id: id.clone(),
            refund_id: format!("rf-{line}"),
            attempt: 1,
            line,
            order_no: "0012345678901234567890".into(),
            amount: Money::from_minor(minor, Currency::Cny),
            card_no: "6222020200112233445".into(),
            holder_name: "张三".into(),
            status: RowStatus::Included,
            reason: String::new(),
        };
        Batch {
            batch_id: id.clone(),
            bank_code: "ICBC".into(),
            channel: "UP1".into(),
            method: RefundMethod::FileUpload,
            date: d(2026, 11, 24),
            sequence: 1,
            status: BatchStatus::Generated,
            currency: Currency::Cny,
            rows: vec![row(1, 1250), row(2, 10_000_005)],
            file_name: format!("{id}.xlsx"),
            file_sha256: String::new(),
            generated_at_ms: 1,
            marked_at_ms: None,
            marked_by: String::new(),
            note: String::new(),
            bank_delivered: false,
            bank_error: String::new(),
        }
    }

    #[test]
    fn ids_are_numbered() {
        let id = batch_id(d(2026, 11, 24), "ICBC", RefundMethod::Offline, 3);
        assert_eq!(id, "B20261124-ICBC-OFFLINE-03");
        assert_eq!(row_id(&id, 7), "B20261124-ICBC-OFFLINE-03-0007");
    }

    #[test]
    fn templates_render_in_their_column_order_and_formats() {
        let b = batch();
        let icbc = render(&BankTemplate::default_for("ICBC"), &b).unwrap();
        assert_eq!(icbc.sheet_name, "退款明细");
        assert_eq!(
            icbc.header,
            vec![
                "序号",
                "明细编号",
                "退款单号",
                "原订单号",
                "收款卡号",
                "收款人",
                "金额(元)",
                "币种",
                "日期"
            ]
        );
        assert_eq!(
            icbc.rows[0],
            vec![
                Cell::Integer(1),
                Cell::Text("B20261124-ICBC-FILE_UPLOAD-01-0001".into()),
                Cell::Text("rf-1".into()),
                Cell::Text("0012345678901234567890".into()),
                Cell::Text("6222020200112233445".into()),
                Cell::Text("张三".into()),
                Cell::Decimal {
                    value: "12.50".into(),
                    decimals: 2
                },
                Cell::Text("CNY".into()),
                Cell::Text("2026-11-24".into()),
            ]
        );
        assert_eq!(
            icbc.summary,
            vec![
                (SUMMARY_COUNT_LABEL.to_string(), Cell::Integer(2)),
                (
                    SUMMARY_TOTAL_LABEL.to_string(),
                    Cell::Decimal {
                        value: "100012.55".into(),
                        decimals: 2
                    }
                ),
            ]
        );

        let ccb = render(&BankTemplate::default_for("CCB"), &b).unwrap();
        assert_eq!(ccb.header[0], "Value Date");
        assert_eq!(ccb.rows[1][0], Cell::Text("20261124".into()));
        assert_eq!(ccb.rows[1][4], Cell::Integer(10_000_005));
        assert_eq!(ccb.rows[1][7], Cell::Integer(2));
        assert_eq!(ccb.summary[1].1, Cell::Integer(10_001_255));

        let generic = BankTemplate::default_for("ABC");
        assert_eq!(generic.bank_code, "ABC");
        assert_eq!(generic.sheet_name, "Refunds");
        assert!(generic.validate().is_ok());
        assert!(BankTemplate::default_for("ICBC").validate().is_ok());
        assert!(BankTemplate::default_for("CCB").validate().is_ok());
    }

    #[test]
    fn template_validation_names_the_field() {
        let ok = BankTemplate::default_for("ICBC");
        let mut t = ok.clone();
        t.date_format = "%Q".into();
        assert!(t.validate().unwrap_err().message.starts_with("date_format"));
        let mut t = ok.clone();
        t.sheet_name = "a/b".into();
        assert!(t.validate().unwrap_err().message.starts_with("sheet_name"));
        let mut t = ok.clone();
        t.columns.retain(|c| c.field != TemplateField::Amount);
        assert!(t.validate().unwrap_err().message.starts_with("columns"));
        let mut t = ok;
        t.columns[0].header = " ".into();
        assert!(t.validate().unwrap_err().message.starts_with("columns"));
    }

    #[test]
    fn marking_suits_the_method_and_is_idempotent() {
        let mut b = batch();
        assert_eq!(
            b.mark(BatchStatus::Sent, "op", "", 5).unwrap_err().code,
            ErrorCode::InvalidArgument
        );
        assert_eq!(
            b.mark(BatchStatus::Uploaded, "op", "n", 5),
            Ok(Outcome::Changed)
        );
        assert!(b.rows.iter().all(|r| r.status == RowStatus::Submitted));
        assert_eq!(b.marked_at_ms, Some(5));
        assert_eq!(
            b.mark(BatchStatus::Uploaded, "op2", "", 6),
            Ok(Outcome::Unchanged)
        );
        assert_eq!(b.marked_by, "op");
        assert_eq!(
            b.total().unwrap(),
            Money::from_minor(10_001_255, Currency::Cny)
        );
        assert_eq!(b.rows[0].card_masked(), "**** 3445");
    }
}
