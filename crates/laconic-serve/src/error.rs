//! What can go wrong when starting or running the server.

/// An error of the server itself (a request's errors are HTTP answers, not these).
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The address cannot be bound (in use, not local, not permitted).
    #[error("cannot bind {addr}: {reason}")]
    Bind {
        /// `host:port` as given.
        addr: String,
        /// Why, in words.
        reason: String,
    },
    /// A setting is out of range.
    #[error("invalid server setting: {0}")]
    InvalidConfig(String),
    /// A thread or the async runtime could not be started.
    #[error("cannot start the server: {0}")]
    Start(std::io::Error),
    /// Listening for SIGTERM and Ctrl-C failed.
    #[error("cannot listen for signals: {0}")]
    Signal(std::io::Error),
    /// A server thread panicked (a bug; requests themselves never panic the server).
    #[error("the server's {0} thread panicked")]
    Panicked(&'static str),
    /// A second SIGTERM or Ctrl-C arrived while the server was draining.
    #[error("stopped by a second signal before the queued and running requests were finished")]
    Aborted,
}

/// `Result` with [`ServeError`].
pub type Result<T> = std::result::Result<T, ServeError>;

/// A bind failure in words.
pub(crate) fn bind_error(addr: &str, e: &std::io::Error) -> ServeError {
    use std::io::ErrorKind;
    let reason = match e.kind() {
        ErrorKind::AddrInUse => "address in use".to_string(),
        ErrorKind::AddrNotAvailable => "address not available on this machine".to_string(),
        ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    };
    ServeError::Bind {
        addr: addr.to_string(),
        reason,
    }
}
