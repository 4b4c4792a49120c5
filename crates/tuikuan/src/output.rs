//! Printing gRPC answers for people (`--output table`) and scripts (`--output json`).
//!
//! JSON is the canonical proto3 JSON mapping (field names in lowerCamelCase, enums by name),
//! produced from the descriptor set the services also serve through reflection, so `ctl` output
//! matches what grpcurl prints for the same call.

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage, SerializeOptions};
use serde_json::Value;

/// How `ctl` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Json,
}

fn pool() -> anyhow::Result<DescriptorPool> {
    DescriptorPool::decode(tuikuan_proto::FILE_DESCRIPTOR_SET)
        .map_err(|e| anyhow::anyhow!("descriptor set: {e}"))
}

/// The proto3 JSON form of `message`, whose full proto name is `full_name`.
pub fn to_json<M: Message>(message: &M, full_name: &str) -> anyhow::Result<Value> {
    let pool = pool()?;
    let descriptor = pool
        .get_message_by_name(full_name)
        .ok_or_else(|| anyhow::anyhow!("unknown message {full_name}"))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())?;
    let options = SerializeOptions::new()
        .skip_default_fields(false)
        .stringify_64_bit_integers(false);
    let value = dynamic.serialize_with_options(serde_json::value::Serializer, &options)?;
    Ok(value)
}

/// Writes to standard output. A reader that closed the pipe (`tuikuan ctl … | head -1`) ends the
/// command quietly with status 0, as Unix tools do; any other write error ends it with a message.
/// Use it through [`crate::out!`] and [`crate::outln!`].
pub fn emit(text: std::fmt::Arguments) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(text).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: cannot write to standard output: {e}");
        std::process::exit(1);
    }
}

/// `print!` for command output (see [`emit`]): a closed pipe ends the command quietly.
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => { $crate::output::emit(format_args!($($arg)*)) };
}

/// `println!` for command output (see [`emit`]): a closed pipe ends the command quietly.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => { $crate::output::emit(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Prints `message` as JSON or as a table.
pub fn print<M: Message>(message: &M, full_name: &str, output: Output) -> anyhow::Result<()> {
    let value = to_json(message, full_name)?;
    match output {
        Output::Json => crate::outln!("{}", serde_json::to_string_pretty(&value)?),
        Output::Table => crate::out!("{}", table(&value)),
    }
    Ok(())
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{} items]", a.len()),
        Value::Object(_) => "{…}".into(),
        other => other.to_string(),
    }
}

/// A human rendering: `key  value` lines for an object, a column table for each list of objects.
pub fn table(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) => {
            let width = map.keys().map(|k| k.len()).max().unwrap_or(0);
            let mut lists = Vec::new();
            for (k, v) in map {
                match v {
                    Value::Array(items) if items.iter().any(|i| i.is_object()) => {
                        lists.push((k, items))
                    }
                    Value::Object(_) => {
                        out.push_str(&format!("{k}:\n"));
                        for line in table(v).lines() {
                            out.push_str(&format!("  {line}\n"));
                        }
                    }
                    _ => out.push_str(&format!("{k:<width$}  {}\n", scalar(v))),
                }
            }
            for (k, items) in lists {
                out.push_str(&format!("{k} ({}):\n", items.len()));
                out.push_str(&rows(items));
            }
        }
        Value::Array(items) => out.push_str(&rows(items)),
        other => out.push_str(&format!("{}\n", scalar(other))),
    }
    out
}

fn rows(items: &[Value]) -> String {
    let mut columns: Vec<String> = Vec::new();
    for item in items {
        if let Value::Object(m) = item {
            for (k, v) in m {
                if !v.is_array() && !v.is_object() && !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
    }
    let cells: Vec<Vec<String>> = items
        .iter()
        .map(|i| {
            columns
                .iter()
                .map(|c| i.get(c).map(scalar).unwrap_or_default())
                .collect()
        })
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(n, c)| {
            cells
                .iter()
                .map(|r| r[n].chars().count())
                .chain(std::iter::once(c.len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    let line = |vals: &[String]| {
        let mut s = String::from("  ");
        for (v, w) in vals.iter().zip(&widths) {
            s.push_str(&format!("{v:<w$}  "));
        }
        s.trim_end().to_string() + "\n"
    };
    out.push_str(&line(&columns));
    for r in &cells {
        out.push_str(&line(r));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tuikuan_proto::business::v1 as biz;

    #[test]
    fn json_uses_proto_names_and_enum_names() {
        let r = biz::Refund {
            refund_id: "rf_1".into(),
            amount: "1.00".into(),
            status: biz::RefundStatus::Processing as i32,
            ..Default::default()
        };
        let v = to_json(&r, "tuikuan.business.v1.Refund").unwrap();
        assert_eq!(v["refundId"], "rf_1");
        assert_eq!(v["status"], "PROCESSING");
        let t = table(&v);
        assert!(t.contains("refundId") && t.contains("PROCESSING"), "{t}");
    }
}
