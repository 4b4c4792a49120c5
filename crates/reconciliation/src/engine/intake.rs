//! What a run does before matching: the file's digests (the content digest that keys runs), the
//! check that the channel is one the platform knows, and the record of every refused file (with
//! an audit entry), so that every upload leaves a trace.

use std::io::BufRead;

use sha2::{Digest, Sha256};
use tuikuan_kernel::id::new_id;
use tuikuan_kernel::{Error, ErrorCode, Result};

use super::{Engine, FileSource, Peers, RunRequest};
use crate::domain::format_date;
use crate::domain::rejection::{refuses_file, FileFacts, RejectedFile};
use crate::domain::ContentDigest;
use crate::store::{self, AuditEntry};

/// A file's SHA-256, content digest and size.
#[derive(Debug, Clone, Default)]
pub struct Digests {
    pub sha256: String,
    pub content_sha256: String,
    pub size_bytes: u64,
}

impl Digests {
    pub fn of(bytes: &[u8]) -> Digests {
        Digests {
            sha256: hex::encode(Sha256::digest(bytes)),
            content_sha256: ContentDigest::of(bytes),
            size_bytes: bytes.len() as u64,
        }
    }

    /// Streams a file on disk.
    pub fn of_path(path: &std::path::Path) -> Result<Digests> {
        let file = std::fs::File::open(path)
            .map_err(|e| Error::field("file", format!("cannot open {}: {e}", path.display())))?;
        let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
        let mut sha = Sha256::new();
        let mut content = ContentDigest::new();
        let mut size = 0u64;
        loop {
            let buf = reader.fill_buf().map_err(|e| {
                Error::field("file", format!("cannot read {}: {e}", path.display()))
            })?;
            if buf.is_empty() {
                break;
            }
            sha.update(buf);
            content.update(buf);
            size += buf.len() as u64;
            let n = buf.len();
            reader.consume(n);
        }
        Ok(Digests {
            sha256: hex::encode(sha.finalize()),
            content_sha256: content.finish(),
            size_bytes: size,
        })
    }

    pub(crate) fn fill(&self, facts: &mut FileFacts) {
        facts.file_sha256 = self.sha256.clone();
        facts.content_sha256 = self.content_sha256.clone();
        facts.size_bytes = self.size_bytes;
    }
}

/// What is known of a request's file before it is read.
pub(crate) fn facts_of(req: &RunRequest) -> FileFacts {
    let mut facts = FileFacts {
        channel: req.channel.clone(),
        date: format_date(req.date),
        source: match req.source {
            FileSource::Bank => "bank",
            _ => "upload",
        }
        .to_string(),
        operator: req.operator.clone(),
        file_format: req.format.clone(),
        ..FileFacts::default()
    };
    if let FileSource::Upload { content, .. } = &req.source {
        Digests::of(content).fill(&mut facts);
    }
    facts
}

impl<P: Peers> Engine<P> {
    /// `CHANNEL_NOT_FOUND` unless the refund center knows the channel.
    pub(crate) async fn check_channel(&self, channel: &str) -> Result<()> {
        if self.peers.known_channel(channel).await? {
            return Ok(());
        }
        Err(Error::new(
            ErrorCode::ChannelNotFound,
            format!("channel: {channel:?} is not a channel of the platform"),
        ))
    }

    /// Records a refused file and its audit entry, when the error refuses the file (not when a
    /// peer or the database failed for a while). A failure to record is logged; the refusal
    /// stands either way.
    pub async fn reject(&self, facts: &FileFacts, error: &Error) -> Option<RejectedFile> {
        if !refuses_file(error) {
            return None;
        }
        let now = self.clock.now_ms();
        let record = RejectedFile::new(new_id("rej"), facts, error, now);
        tracing::warn!(
            rejection_id = %record.rejection_id,
            channel = %record.channel,
            date = %record.date,
            source = %record.source,
            code = %record.error_code,
            line = record.error_line,
            field = %record.error_field,
            "clearing file refused"
        );
        let r = record.clone();
        let stored = self
            .db
            .transaction(move |conn| {
                store::rejected::insert(conn, &r)?;
                store::insert_audit(
                    conn,
                    &AuditEntry {
                        audit_id: new_id("aud"),
                        subject_kind: "FILE".into(),
                        subject_id: r.rejection_id.clone(),
                        action: "REJECTED".into(),
                        operator: if r.operator.is_empty() {
                            r.source.clone()
                        } else {
                            r.operator.clone()
                        },
                        reason: r.error_message.clone(),
                        before_state: format!(
                            "{} file for {} {}, sha256 {}, {} bytes",
                            r.source, r.channel, r.date, r.file_sha256, r.size_bytes
                        ),
                        after_state: format!("REJECTED {} ({})", r.error_code, r.location()),
                        at_ms: r.at_ms,
                    },
                )
            })
            .await;
        if let Err(e) = stored {
            tracing::error!(error = %e, "the refused file could not be recorded");
            return None;
        }
        Some(record)
    }
}
