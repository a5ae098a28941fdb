//! SCAP content and results, parsed without running anything: which rules a
//! profile selects (the catalog a run is planned from) and what `oscap xccdf
//! eval` found for each rule (the Evaluator's verdict and, for a failure,
//! the details the Reflector reads). DESIGN T4.
//!
//! # Layout
//!
//! - [`catalog`]: `Catalog` of a source datastream: profiles, rules, and the
//!   XCCDF selection rules (defaults, groups, `extends`, clusters).
//! - [`results`]: `Evaluation` of an ARF (or XCCDF results) file: per-rule
//!   `RuleStatus` and, for failures, the OVAL criteria tree down to the
//!   collected items, with a capped text rendering.
//! - `xml`: parse options (no DTD, node cap), namespaces, XHTML to text.
//! - [`error`]: the crate's one error type, `ScapError`.

pub mod catalog;
pub mod error;
pub mod results;
mod xml;

pub use catalog::{Catalog, Profile, Rule, Severity};
pub use error::ScapError;
pub use results::{Evaluation, RuleResult, RuleStatus};
