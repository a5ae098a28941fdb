//! The one error type of this crate.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ScapError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Not well-formed XML, a DTD (refused: SCAP content never needs one), or
    /// more nodes than the parse limit.
    #[error("not well-formed xml: {0}")]
    Xml(#[from] roxmltree::Error),
    #[error("no xccdf benchmark in the document")]
    NoBenchmark,
    #[error("no xccdf test result in the document")]
    NoTestResult,
    #[error("no profile {0} in the benchmark")]
    UnknownProfile(String),
    #[error("profile {0} extends itself through its parents")]
    ProfileCycle(String),
    /// The document parsed but breaks a rule of the format.
    #[error("invalid {what}: {message}")]
    Invalid { what: &'static str, message: String },
}
