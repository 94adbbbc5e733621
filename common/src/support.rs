//! What each backend can evaluate, beyond what the SQL planner checks (kept apart from the
//! backend registry, which everything else builds on).

use crate::backend::BackendId;
use crate::plan::{AggFunc, Plan};

/// Checks that a backend can serve a plan's constructs (beyond what the SQL planner checks).
pub fn check_supported(backend: BackendId, plan: &Plan) -> Result<(), String> {
    match backend {
        BackendId::DpSandbox => {
            if plan.aggregates().any(|a| a.weight.is_some()) {
                return Err(
                    "dp_sandbox does not support weighted sums (SUM(col * k)); use he_backend"
                        .into(),
                );
            }
            Ok(())
        }
        BackendId::MpcBackend => {
            if let Some(a) = plan
                .aggregates()
                .find(|a| matches!(a.func, AggFunc::Min | AggFunc::Max))
            {
                return Err(format!(
                    "mpc_backend does not support {:?} (additive shares only sum); use COUNT, SUM or AVG",
                    a.func
                ));
            }
            Ok(())
        }
        BackendId::HeBackend => crate::he::encode::check_plan(plan).map_err(|e| e.to_string()),
        BackendId::EnclaveBackend => Ok(()),
    }
}
