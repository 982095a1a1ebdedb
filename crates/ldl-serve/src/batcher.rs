//! The inference thread: it owns the model, gathers the requests that arrive within a
//! short window into one batch, runs one forward pass for them and answers each request.
//! The model never runs on the async threads, and only one forward pass runs at a time.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::StatusCode;
use ldl_train::{Prediction, Predictor, TrainedModel};
use tokio::sync::oneshot;

use crate::error::ApiError;

/// One sample of a request, as it arrived.
#[derive(Debug)]
pub enum RawInput {
    /// An encoded image (JPEG or PNG).
    Image(Bytes),
    /// One row of named feature values.
    Features(serde_json::Map<String, serde_json::Value>),
}

/// What a request gets back: a prediction per sample, in order, or why not.
pub type Reply = Result<Vec<Prediction>, ApiError>;

/// A request's samples and where its answer goes.
#[derive(Debug)]
pub struct Job {
    /// The samples, in the request's order.
    pub inputs: Vec<RawInput>,
    /// Where the predictions are sent.
    pub reply: oneshot::Sender<Reply>,
}

/// What the inference thread has done, for `/healthz` (and the tests that check
/// micro-batching by comparing forward passes with requests).
#[derive(Debug, Default)]
pub struct Counters {
    /// Forward passes run.
    pub forward_passes: AtomicU64,
    /// Samples predicted.
    pub samples: AtomicU64,
}

/// How the inference thread batches.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// The most samples per forward pass.
    pub max_batch: usize,
    /// How long to wait for more requests after the first of a batch.
    pub window: Duration,
}

/// The handle requests are submitted through. Dropping every clone closes the channel,
/// and the inference thread ends once it has answered what it holds.
#[derive(Debug, Clone)]
pub struct Batcher {
    sender: SyncSender<Job>,
    counters: Arc<Counters>,
}

impl Batcher {
    /// Starts the inference thread with the model, with room for `queue` waiting jobs.
    pub fn start(
        model: TrainedModel,
        batching: Batching,
        queue: usize,
    ) -> std::io::Result<(Batcher, JoinHandle<()>)> {
        let (sender, receiver) = sync_channel(queue);
        let counters = Arc::new(Counters::default());
        let thread_counters = Arc::clone(&counters);
        let thread = std::thread::Builder::new()
            .name("ldl-inference".into())
            .spawn(move || match model.predictor() {
                Ok(predictor) => run(&model, &predictor, &receiver, batching, &thread_counters),
                Err(error) => refuse_all(&receiver, &error),
            })?;
        Ok((Batcher { sender, counters }, thread))
    }

    /// Queues a job without waiting; a full queue or a stopped thread gives it back.
    pub fn submit(&self, job: Job) -> Result<(), Job> {
        self.sender.try_send(job).map_err(|e| match e {
            std::sync::mpsc::TrySendError::Full(job)
            | std::sync::mpsc::TrySendError::Disconnected(job) => job,
        })
    }

    /// What the inference thread has done so far.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// A job whose inputs are ready for the model.
struct Prepared {
    inputs: Vec<Vec<f32>>,
    reply: oneshot::Sender<Reply>,
}

/// The inference thread's loop: until the channel closes, a batch of jobs, then their
/// answers from `predictor`, the model's inference pass built once for all of them.
fn run(
    model: &TrainedModel,
    predictor: &Predictor,
    receiver: &Receiver<Job>,
    batching: Batching,
    counters: &Counters,
) {
    // A job that did not fit into the last batch opens the next one.
    let mut held: Option<Prepared> = None;
    loop {
        let first = match held.take() {
            Some(prepared) => prepared,
            None => match receiver.recv() {
                Ok(job) => match prepare(model, job) {
                    Some(prepared) => prepared,
                    None => continue,
                },
                Err(_) => return,
            },
        };
        let mut size = first.inputs.len();
        let mut batch = vec![first];
        let deadline = Instant::now() + batching.window;
        while size < batching.max_batch {
            let left = deadline.saturating_duration_since(Instant::now());
            let job = if left.is_zero() {
                match receiver.try_recv() {
                    Ok(job) => job,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            } else {
                match receiver.recv_timeout(left) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            };
            let Some(prepared) = prepare(model, job) else {
                continue;
            };
            if size + prepared.inputs.len() > batching.max_batch {
                held = Some(prepared);
                break;
            }
            size += prepared.inputs.len();
            batch.push(prepared);
        }
        answer(predictor, batch, batching.max_batch, counters);
    }
}

/// The inference thread's loop when the model's inference pass could not be built: every
/// job is answered with why, until the channel closes.
fn refuse_all(receiver: &Receiver<Job>, error: &ldl_train::Error) {
    for job in receiver {
        let message = format!("the model cannot run: {error}");
        let _ = job.reply.send(Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            message,
        )));
    }
}

/// A job's inputs decoded and prepared as the model reads them; a bad input answers the
/// job with an error naming it, and gives `None`.
fn prepare(model: &TrainedModel, job: Job) -> Option<Prepared> {
    let several = job.inputs.len() > 1;
    let prepared: Result<Vec<Vec<f32>>, ApiError> = job
        .inputs
        .iter()
        .enumerate()
        .map(|(i, input)| {
            let which = |what: &str| {
                if several {
                    format!("{what} {i}: ")
                } else {
                    String::new()
                }
            };
            match input {
                RawInput::Image(bytes) => ldl_data::decode_bytes(bytes)
                    .map_err(|e| {
                        ApiError::unprocessable(format!(
                            "{}the image cannot be decoded: {e}",
                            which("image")
                        ))
                    })
                    .and_then(|image| {
                        model.image_input(&image).map_err(|e| {
                            ApiError::unprocessable(format!(
                                "{}the image cannot be prepared: {e}",
                                which("image")
                            ))
                        })
                    }),
                RawInput::Features(row) => model
                    .encode_named_features(row)
                    .map(|features| model.feature_input(&features))
                    .map_err(|e| ApiError::unprocessable(format!("{}{e}", which("row")))),
            }
        })
        .collect();
    match prepared {
        Ok(inputs) => Some(Prepared {
            inputs,
            reply: job.reply,
        }),
        Err(error) => {
            // The client may have gone; nobody is left to tell then.
            let _ = job.reply.send(Err(error));
            None
        }
    }
}

/// Runs the batch (in forward passes of at most `max_batch` samples: a single request may
/// hold more) and sends each job its predictions.
fn answer(predictor: &Predictor, batch: Vec<Prepared>, max_batch: usize, counters: &Counters) {
    let mut counts = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    let mut inputs = Vec::new();
    for job in batch {
        counts.push(job.inputs.len());
        replies.push(job.reply);
        inputs.extend(job.inputs);
    }
    // A panic in the model must not take the thread, and so the server, down: the batch is
    // answered 500 and the next one runs.
    let predicted = catch_unwind(AssertUnwindSafe(|| {
        let mut predictions = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(max_batch) {
            predictions.extend(predictor.predict_inputs(chunk)?);
            counters.forward_passes.fetch_add(1, Ordering::Relaxed);
            counters
                .samples
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        Ok::<_, ldl_train::Error>(predictions)
    }));
    let failure = |message: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, message);
    match predicted {
        Ok(Ok(predictions)) => {
            let mut rest = predictions.into_iter();
            for (reply, count) in replies.into_iter().zip(counts) {
                let _ = reply.send(Ok(rest.by_ref().take(count).collect()));
            }
        }
        Ok(Err(error)) => {
            for reply in replies {
                let _ = reply.send(Err(failure(format!("the model failed: {error}"))));
            }
        }
        Err(_) => {
            for reply in replies {
                let _ = reply.send(Err(failure("the model failed (a panic)".into())));
            }
        }
    }
}
