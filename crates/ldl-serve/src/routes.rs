//! The HTTP API: its routes, and how a request becomes a job for the inference thread.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio::sync::{oneshot, Semaphore};

use crate::batcher::{Batcher, Job, RawInput};
use crate::error::ApiError;
use crate::response::{predictions_json, AxisLabel};

/// What every handler shares.
pub struct AppState {
    /// Where jobs go.
    pub batcher: Batcher,
    /// One permit per request that may be accepted and not yet answered.
    pub permits: Arc<Semaphore>,
    /// Whether the model reads images (otherwise named features).
    pub reads_images: bool,
    /// The axes' names and units, in the model's order.
    pub axes: Vec<AxisLabel>,
    /// `/v1/model`'s answer, made once.
    pub description: Value,
    /// The largest body accepted, in bytes.
    pub max_body: usize,
    /// How long a body may take to arrive.
    pub body_timeout: Duration,
}

/// The page at `/`, shipped inside the binary: it needs no build step and, reading only
/// this server's API, no network.
const PAGE: &str = include_str!("page.html");

/// The API's routes; every answer, errors included, is JSON, but the page at `/`.
pub fn router(state: Arc<AppState>) -> Router {
    let max_body = state.max_body;
    Router::new()
        .route("/", get(page))
        .route("/v1/predict", post(predict))
        .route("/v1/model", get(model))
        .route("/healthz", get(health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are read with this limit (raw and multipart alike): 413 beyond it.
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
}

async fn page() -> axum::response::Html<&'static str> {
    axum::response::Html(PAGE)
}

async fn model(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(state.description.clone())
}

async fn health(State(state): State<Arc<AppState>>) -> Json<Value> {
    let counters = state.batcher.counters();
    Json(json!({
        "status": "ok",
        "forward_passes": counters.forward_passes.load(Ordering::Relaxed),
        "samples": counters.samples.load(Ordering::Relaxed),
    }))
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such route; the API is POST /v1/predict, GET /v1/model and GET /healthz",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed; the API is POST /v1/predict, GET /v1/model and GET /healthz",
    )
}

/// `POST /v1/predict`: the request's samples go to the inference thread as one job, and
/// its predictions come back in order.
async fn predict(
    State(state): State<Arc<AppState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let pmf = pmf_requested(request.uri().query())?;
    // The permit is taken before the body is read, so that at most `--queue` bodies are
    // held at once: memory stays bounded however many clients connect.
    let Ok(_permit) = Arc::clone(&state.permits).try_acquire_owned() else {
        return Err(busy());
    };
    let read = async {
        if state.reads_images {
            image_inputs(request, state.max_body).await
        } else {
            feature_inputs(request, state.max_body).await
        }
    };
    // A client that never finishes its body must not hold a place in the queue (or keep a
    // graceful stop waiting) forever.
    let inputs = tokio::time::timeout(state.body_timeout, read)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the body did not arrive within {} s (--body-timeout-s)",
                    state.body_timeout.as_secs_f64()
                ),
            )
        })??;
    let (reply, answer) = oneshot::channel();
    if state.batcher.submit(Job { inputs, reply }).is_err() {
        return Err(busy());
    }
    let predictions = answer.await.map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the inference thread stopped before answering",
        )
    })??;
    // Serialised here, while the axes it borrows are at hand.
    Ok(Json(predictions_json(&state.axes, &predictions, pmf)).into_response())
}

/// 503: the queue is full (or the inference thread is gone).
fn busy() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the server is busy: its queue of requests is full; try again shortly",
    )
}

/// The `pmf` query parameter: `true`/`1` or `false`/`0`; absent is false.
fn pmf_requested(query: Option<&str>) -> Result<bool, ApiError> {
    let mut pmf = false;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, "true"));
        if key != "pmf" {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("unknown query parameter `{key}`; the only one is `pmf`"),
            ));
        }
        pmf = match value {
            "true" | "1" => true,
            "false" | "0" => false,
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    format!("`pmf` must be true or false, got `{other}`"),
                ))
            }
        };
    }
    Ok(pmf)
}

/// The request's media type, lowercased, without parameters.
fn media_type(request: &Request) -> String {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The body, read up to the limit; beyond it, 413.
async fn body(request: Request, max_body: usize) -> Result<Bytes, ApiError> {
    Bytes::from_request(request, &())
        .await
        .map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                too_large(max_body)
            } else {
                ApiError::new(rejection.status(), rejection.body_text())
            }
        })
}

fn too_large(max_body: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the body is larger than the server accepts ({max_body} bytes, --max-body)"),
    )
}

/// An image model's samples: a raw JPEG or PNG body, or the `image` parts of a form.
async fn image_inputs(request: Request, max_body: usize) -> Result<Vec<RawInput>, ApiError> {
    let media = media_type(&request);
    if media == "multipart/form-data" {
        return form_images(request, max_body).await;
    }
    if !(media.starts_with("image/") || media == "application/octet-stream") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "this model reads images: send a JPEG or PNG body (Content-Type image/jpeg or \
                 image/png) or multipart/form-data with `image` parts, not `{}`",
                if media.is_empty() {
                    "no Content-Type"
                } else {
                    &media
                }
            ),
        ));
    }
    let bytes = body(request, max_body).await?;
    if bytes.is_empty() {
        return Err(ApiError::unprocessable("the body is empty: send an image"));
    }
    Ok(vec![RawInput::Image(bytes)])
}

/// The `image` parts of a multipart form, in order.
async fn form_images(request: Request, max_body: usize) -> Result<Vec<RawInput>, ApiError> {
    let form_error = |status: StatusCode, text: String| {
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            too_large(max_body)
        } else {
            ApiError::new(status, format!("bad multipart body: {text}"))
        }
    };
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|r| form_error(r.status(), r.body_text()))?;
    let mut images = Vec::new();
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| form_error(e.status(), e.body_text()))?
    {
        match field.name() {
            Some("image") => {
                let bytes = field
                    .bytes()
                    .await
                    .map_err(|e| form_error(e.status(), e.body_text()))?;
                if bytes.is_empty() {
                    return Err(ApiError::unprocessable(format!(
                        "image {} is empty",
                        images.len()
                    )));
                }
                images.push(RawInput::Image(bytes));
            }
            other => {
                return Err(ApiError::unprocessable(format!(
                    "unknown form field `{}`; send each image as a part named `image`",
                    other.unwrap_or("")
                )))
            }
        }
    }
    if images.is_empty() {
        return Err(ApiError::unprocessable(
            "the form holds no `image` part: send each image as a part named `image`",
        ));
    }
    Ok(images)
}

/// A feature model's samples: `{"rows": [{name: value, ...}, ...]}` or one such object.
async fn feature_inputs(request: Request, max_body: usize) -> Result<Vec<RawInput>, ApiError> {
    let media = media_type(&request);
    if media != "application/json" {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "this model reads named features: send JSON (Content-Type application/json) \
                 {{\"rows\": [{{\"feature\": value, ...}}]}}, not `{}`",
                if media.is_empty() {
                    "no Content-Type"
                } else {
                    &media
                }
            ),
        ));
    }
    let bytes = body(request, max_body).await?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the body is not valid JSON: {e}"),
        )
    })?;
    let rows =
        match value {
            Value::Object(mut object) => match object.remove("rows") {
                Some(Value::Array(rows)) => rows,
                Some(_) => {
                    return Err(ApiError::unprocessable(
                        "`rows` must be an array of objects of named features",
                    ))
                }
                None => vec![Value::Object(object)],
            },
            _ => return Err(ApiError::unprocessable(
                "expected {\"rows\": [{\"feature\": value, ...}]} or one object of named features",
            )),
        };
    if rows.is_empty() {
        return Err(ApiError::unprocessable(
            "`rows` is empty: send at least one row",
        ));
    }
    rows.into_iter()
        .enumerate()
        .map(|(i, row)| match row {
            Value::Object(row) => Ok(RawInput::Features(row)),
            _ => Err(ApiError::unprocessable(format!(
                "row {i} is not an object of named features"
            ))),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pmf_is_off_unless_asked_for_and_other_parameters_are_refused() {
        assert_eq!(pmf_requested(None), Ok(false));
        assert_eq!(pmf_requested(Some("")), Ok(false));
        assert_eq!(pmf_requested(Some("pmf=true")), Ok(true));
        assert_eq!(pmf_requested(Some("pmf")), Ok(true));
        assert_eq!(pmf_requested(Some("pmf=1&pmf=0")), Ok(false));
        let err = pmf_requested(Some("pmf=yes")).unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.contains("`pmf` must be true or false"));
        let err = pmf_requested(Some("limit=3")).unwrap_err();
        assert!(err.message.contains("unknown query parameter `limit`"));
    }
}
