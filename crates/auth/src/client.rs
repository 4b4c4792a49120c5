//! The client side: attach an operator token to every call of a gRPC client.

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::{Request, Status};
use tuikuan_kernel::{Error, Result};

/// Adds `authorization: Bearer <token>` to every request (nothing when it holds no token).
#[derive(Clone, Debug, Default)]
pub struct OperatorToken {
    value: Option<MetadataValue<Ascii>>,
}

impl OperatorToken {
    /// Carrying `token` (empty: none).
    pub fn new(token: &str) -> Result<OperatorToken> {
        let token = token.trim();
        if token.is_empty() {
            return Ok(OperatorToken::default());
        }
        let value = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| Error::field("token", "not a valid header value"))?;
        Ok(OperatorToken { value: Some(value) })
    }

    /// No token (service-to-service calls, merchants).
    pub fn none() -> OperatorToken {
        OperatorToken::default()
    }

    pub fn is_set(&self) -> bool {
        self.value.is_some()
    }
}

impl Interceptor for OperatorToken {
    fn call(&mut self, mut request: Request<()>) -> std::result::Result<Request<()>, Status> {
        if let Some(v) = &self.value {
            request.metadata_mut().insert("authorization", v.clone());
        }
        Ok(request)
    }
}

/// `message` as a request carrying `token` (none when empty).
pub fn with_token<T>(message: T, token: &str) -> Result<Request<T>> {
    let mut request = Request::new(message);
    if let Some(v) = OperatorToken::new(token)?.value {
        request.metadata_mut().insert("authorization", v);
    }
    Ok(request)
}
