//! The coordinator as HE key holder. Being built: until then HE runs take the generic path,
//! where nodes refuse them.

use std::sync::Arc;

use crate::CoordState;
use crate::model::{QueryRecord, RunRecord};

/// Drives an HE run to its end.
pub async fn drive(state: Arc<CoordState>, query: QueryRecord, run: RunRecord) {
    crate::runs::drive_generic(state, query, run).await
}
