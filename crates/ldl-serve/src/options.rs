//! How the server listens, batches and bounds its inputs.

use std::time::Duration;

use crate::error::{Error, Result};

/// The server's settings (`ldl serve`'s options).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// The address to listen on: `127.0.0.1` (the default) answers this machine only.
    pub host: String,
    /// The port; 0 picks a free one (see [`crate::Server::local_addr`]).
    pub port: u16,
    /// The most samples one forward pass runs.
    pub max_batch: usize,
    /// How long the inference thread waits for more requests to join a batch.
    pub batch_window: Duration,
    /// The most requests accepted and not yet answered; more are answered 503.
    pub queue: usize,
    /// The largest request body, in bytes; a larger one is answered 413.
    pub max_body: usize,
    /// How long a request's body may take to arrive; a slower one is answered 408, so
    /// that a client that never finishes its body does not hold a place in the queue (or
    /// keep a graceful stop waiting) forever.
    pub body_timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            host: "127.0.0.1".into(),
            port: 8080,
            max_batch: 32,
            batch_window: Duration::from_millis(5),
            queue: 256,
            max_body: 16 << 20,
            body_timeout: Duration::from_secs(60),
        }
    }
}

impl ServeOptions {
    /// Refuses settings under which the server could not answer anything.
    pub fn check(&self) -> Result<()> {
        let positive = [
            ("--max-batch", self.max_batch),
            ("--queue", self.queue),
            ("--max-body", self.max_body),
        ];
        for (name, value) in positive {
            if value == 0 {
                return Err(Error::Options(format!("{name} must be at least 1, got 0")));
            }
        }
        if self.body_timeout.is_zero() {
            return Err(Error::Options(
                "--body-timeout-s must be at least 1, got 0".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_batch_queue_or_body_is_refused_by_name() {
        assert!(ServeOptions::default().check().is_ok());
        let options = ServeOptions {
            queue: 0,
            ..ServeOptions::default()
        };
        let err = options.check().unwrap_err().to_string();
        assert_eq!(err, "--queue must be at least 1, got 0");
    }
}
