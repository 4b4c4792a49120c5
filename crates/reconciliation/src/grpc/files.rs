//! The file-facing parts of the service: uploads (refused ones recorded with who sent them) and
//! refused files on the wire.

use tonic::Request;
use tuikuan_kernel::id::validate_external_id;
use tuikuan_kernel::Result;
use tuikuan_proto::reconciliation::v1 as pb;

use super::GrpcPeers;
use crate::domain::rejection::{bounded, FileFacts, RejectedFile};
use crate::domain::{parse_business_date, TextEncoding};
use crate::engine::intake::Digests;
use crate::engine::{Engine, FileSource, RunRequest, RunResult};

/// The operator of a staff request: the verified operator token's (the staff guard put it into
/// the request), bounded; empty when none.
pub fn operator_of<T>(request: &Request<T>) -> String {
    tuikuan_auth::staff_if_any(request)
        .map(|s| bounded(&s.operator.name, 128))
        .unwrap_or_default()
}

/// Runs an uploaded file. A request refused before the run starts (bad channel, date, encoding,
/// no content) is recorded as a refused file too; the run records its own refusals.
pub async fn upload(
    engine: &Engine<GrpcPeers>,
    operator: String,
    req: pb::RunReconciliationFileRequest,
) -> Result<RunResult> {
    let checked = (|| -> Result<_> {
        validate_external_id(&req.channel, "channel")?;
        let date = parse_business_date(&req.date, "date")?;
        TextEncoding::parse(&req.encoding)?;
        Ok(date)
    })();
    let date = match checked {
        Ok(date) => date,
        Err(e) => {
            let mut facts = FileFacts {
                channel: req.channel.clone(),
                date: req.date.clone(),
                source: "upload".into(),
                operator,
                file_format: req.format.clone(),
                ..FileFacts::default()
            };
            Digests::of(&req.content).fill(&mut facts);
            engine.reject(&facts, &e).await;
            return Err(e);
        }
    };
    engine
        .run(RunRequest {
            channel: req.channel,
            date,
            format: req.format,
            encoding: req.encoding,
            source: FileSource::Upload {
                content: req.content,
                sha256: req.sha256,
            },
            operator,
        })
        .await
}

pub fn rejected_to_wire(r: &RejectedFile) -> pb::RejectedFile {
    pb::RejectedFile {
        rejection_id: r.rejection_id.clone(),
        channel: r.channel.clone(),
        date: r.date.clone(),
        source: r.source.clone(),
        operator: r.operator.clone(),
        format: r.file_format.clone(),
        file_sha256: r.file_sha256.clone(),
        content_sha256: r.content_sha256.clone(),
        size_bytes: r.size_bytes,
        error_code: r.error_code.clone(),
        error_line: u32::try_from(r.error_line).unwrap_or(u32::MAX),
        error_field: r.error_field.clone(),
        error_message: r.error_message.clone(),
        at_ms: r.at_ms,
    }
}
