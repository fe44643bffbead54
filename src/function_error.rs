//! The one shape of a Lambda function's failure: every handler's error type implements [`HandlerError`] (its
//! stable `errorType`, e.g. `InvalidRequest`, `NotFound`, `Rejected`, `Transient`, `AwsError`) and answers
//! through [`FunctionError`], which becomes Lambda's `Diagnostic` (`errorType` + `errorMessage`). A new function
//! can't answer errors differently: its binary maps the handler's error with `FunctionError::from`, and there is
//! no other conversion to `Diagnostic` in the library.

use lambda_runtime::Diagnostic;

/// An error a Lambda handler returns.
pub trait HandlerError: std::error::Error {
    /// The stable `errorType` callers match on (never the message, which may change).
    fn error_type(&self) -> &'static str;
}

/// What a function answers when it fails: the `errorType` and the `errorMessage` (the error's text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionError {
    pub error_type: String,
    pub error_message: String,
}

impl<E: HandlerError> From<E> for FunctionError {
    fn from(err: E) -> Self {
        Self {
            error_type: err.error_type().to_owned(),
            error_message: err.to_string(),
        }
    }
}

impl From<FunctionError> for Diagnostic {
    fn from(err: FunctionError) -> Self {
        Diagnostic {
            error_type: err.error_type,
            error_message: err.error_message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("layer_name: must be 1-64 characters")]
    struct Bad;

    impl HandlerError for Bad {
        fn error_type(&self) -> &'static str {
            "InvalidRequest"
        }
    }

    #[test]
    fn a_handler_error_becomes_lambdas_error_type_and_message() {
        let d = Diagnostic::from(FunctionError::from(Bad));
        assert_eq!(d.error_type, "InvalidRequest");
        assert_eq!(d.error_message, "layer_name: must be 1-64 characters");
    }
}
