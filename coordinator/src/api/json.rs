//! A JSON body extractor whose rejections are `ApiError` bodies that say
//! what is wrong with the request, instead of axum's plain-text ones.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use serde::de::DeserializeOwned;

use super::error::ApiFailure;

pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiFailure;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Self(v)),
            Err(rejection) => Err(rejection_to_failure(rejection)),
        }
    }
}

fn rejection_to_failure(r: JsonRejection) -> ApiFailure {
    let status = match &r {
        // A body of the wrong shape is a bad request like any other.
        JsonRejection::JsonDataError(_) | JsonRejection::JsonSyntaxError(_) => {
            StatusCode::BAD_REQUEST
        }
        other => other.status(),
    };
    let message = match &r {
        JsonRejection::MissingJsonContentType(_) => {
            "expected a JSON body with header `Content-Type: application/json`".to_owned()
        }
        other => other.body_text(),
    };
    ApiFailure::new(status, message)
}
