//! `ldl serve`: a trained model behind an HTTP API.
//!
//! - `POST /v1/predict`: an image (raw JPEG/PNG body, or multipart `image` parts) for image
//!   models, JSON rows of named features for feature models; `?pmf=true` adds the
//!   distributions.
//! - `GET /v1/model`: the label space, model, input and training.
//! - `GET /healthz`: liveness, with the forward passes and samples run so far.
//! - `GET /`: a page to try the model by hand (a photo or feature fields in, each axis's
//!   distribution drawn), shipped inside the binary.
//!
//! Concurrent requests are micro-batched: one inference thread owns the model and runs one
//! forward pass for the requests that arrive within a short window (up to a maximum batch).
//! Requests wait in a bounded queue; beyond it they are answered 503 at once.

mod batcher;
mod describe;
mod error;
mod options;
mod response;
mod routes;
mod server;

pub use error::{Error, Result};
pub use options::ServeOptions;
pub use server::{serve, shutdown_signal, Server};
