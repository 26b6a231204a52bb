//! The SDK's error type.

use waggle_core::ValidationError;

/// What can go wrong in the SDK.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The server URL is not a valid URI.
    #[error("invalid server URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL given.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The server could not be reached.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// The transport error.
        reason: String,
    },
    /// An input broke a model rule (checked before anything is sent).
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The server answered with an error status.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Rpc(tonic::Status),
    /// The server sent something the SDK does not understand.
    #[error("unexpected response from server: {0}")]
    Protocol(String),
    /// The client was shut down.
    #[error("the client was shut down")]
    Closed,
}

// Not `#[from]`: that would make the status the error's `source()`, and reports that print
// the chain would repeat the message.
impl From<tonic::Status> for Error {
    fn from(status: tonic::Status) -> Self {
        Error::Rpc(status)
    }
}

impl Error {
    /// The gRPC status code, for errors that came from the server.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Rpc(s) => Some(s.code()),
            _ => None,
        }
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::InvalidArgument => "invalid argument",
        tonic::Code::NotFound => "not found",
        tonic::Code::Unavailable => "unavailable",
        tonic::Code::DeadlineExceeded => "deadline exceeded",
        tonic::Code::Internal => "internal error",
        tonic::Code::PermissionDenied => "permission denied",
        _ => "error",
    }
}
