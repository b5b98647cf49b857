//! The one place application errors become gRPC statuses.

use tonic::{Code, Status};

use crate::app::AppError;

impl From<AppError> for Status {
    fn from(e: AppError) -> Self {
        let code = match &e {
            AppError::Invalid(_) | AppError::InvalidDocument(_) => Code::InvalidArgument,
            AppError::NotFound(_) => Code::NotFound,
            AppError::AlreadyExists(_) => Code::AlreadyExists,
            AppError::FailedPrecondition(_) => Code::FailedPrecondition,
            AppError::Unavailable(_) => Code::Unavailable,
            AppError::Internal(_) => Code::Internal,
        };
        if code == Code::Internal {
            tracing::error!(error = %e, "internal error");
        }
        Status::new(code, e.to_string())
    }
}
