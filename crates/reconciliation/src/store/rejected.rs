//! Storage of refused files (`rejected_files`).

use diesel::prelude::*;
use tuikuan_db::{db_err, AnyConnection};
use tuikuan_kernel::{Error, Result};

use crate::domain::rejection::RejectedFile;

diesel::table! {
    rejected_files (rejection_id) {
        rejection_id -> Text,
        channel -> Text,
        business_date -> Text,
        source -> Text,
        operator -> Text,
        file_format -> Text,
        file_sha256 -> Text,
        content_sha256 -> Text,
        size_bytes -> BigInt,
        error_code -> Text,
        error_line -> BigInt,
        error_field -> Text,
        error_message -> Text,
        at_ms -> BigInt,
    }
}

#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = rejected_files)]
struct Row {
    rejection_id: String,
    channel: String,
    business_date: String,
    source: String,
    operator: String,
    file_format: String,
    file_sha256: String,
    content_sha256: String,
    size_bytes: i64,
    error_code: String,
    error_line: i64,
    error_field: String,
    error_message: String,
    at_ms: i64,
}

fn to_row(r: &RejectedFile) -> Row {
    Row {
        rejection_id: r.rejection_id.clone(),
        channel: r.channel.clone(),
        business_date: r.date.clone(),
        source: r.source.clone(),
        operator: r.operator.clone(),
        file_format: r.file_format.clone(),
        file_sha256: r.file_sha256.clone(),
        content_sha256: r.content_sha256.clone(),
        size_bytes: i64::try_from(r.size_bytes).unwrap_or(i64::MAX),
        error_code: r.error_code.clone(),
        error_line: i64::try_from(r.error_line).unwrap_or(i64::MAX),
        error_field: r.error_field.clone(),
        error_message: r.error_message.clone(),
        at_ms: r.at_ms,
    }
}

fn from_row(r: Row) -> Result<RejectedFile> {
    let corrupt = |f: &str| Error::internal(format!("stored rejected file has a bad {f}"));
    Ok(RejectedFile {
        rejection_id: r.rejection_id,
        channel: r.channel,
        date: r.business_date,
        source: r.source,
        operator: r.operator,
        file_format: r.file_format,
        file_sha256: r.file_sha256,
        content_sha256: r.content_sha256,
        size_bytes: u64::try_from(r.size_bytes).map_err(|_| corrupt("size_bytes"))?,
        error_code: r.error_code,
        error_line: usize::try_from(r.error_line).map_err(|_| corrupt("error_line"))?,
        error_field: r.error_field,
        error_message: r.error_message,
        at_ms: r.at_ms,
    })
}

pub fn insert(conn: &mut AnyConnection, r: &RejectedFile) -> Result<()> {
    diesel::insert_into(rejected_files::table)
        .values(to_row(r))
        .execute(conn)
        .map_err(db_err)?;
    Ok(())
}

/// The newest refused files (of one channel, or of all), newest first.
pub fn list(
    conn: &mut AnyConnection,
    channel: Option<&str>,
    limit: u32,
) -> Result<Vec<RejectedFile>> {
    let mut q = rejected_files::table
        .select(Row::as_select())
        .order((
            rejected_files::at_ms.desc(),
            rejected_files::rejection_id.desc(),
        ))
        .limit(i64::from(limit))
        .into_boxed();
    if let Some(c) = channel {
        q = q.filter(rejected_files::channel.eq(c.to_string()));
    }
    q.load(conn)
        .map_err(db_err)?
        .into_iter()
        .map(from_row)
        .collect()
}
