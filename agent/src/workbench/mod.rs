//! The three parts a remediation loop works with — a [`Brain`] that writes
//! fix scripts, a [`Target`] they run on, an [`Evaluator`] that re-checks
//! the rule — bundled per slot as a [`Workbench`].
//!
//! Traits return boxed futures so they stay object safe (`Arc<dyn …>`): the
//! brain is chosen at run time (`--brain`), and Docker/SSH targets and an
//! OpenSCAP evaluator will slot in beside the simulation.

mod brain;
mod evaluator;
mod target;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

pub use brain::{Brain, PriorAttempt, Prompt};
pub use evaluator::{Evaluation, Evaluator};
pub use target::{cap_output, truncate_utf8, ExecResult, Target, MAX_OUTPUT_BYTES};

/// A `Send` future borrowed from its receiver, as trait methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What one slot needs to remediate rules. Each slot owns its target
/// (DESIGN T2): a workbench is never shared between slots.
#[derive(Clone)]
pub struct Workbench {
    pub brain: Arc<dyn Brain>,
    pub target: Arc<dyn Target>,
    pub evaluator: Arc<dyn Evaluator>,
}
