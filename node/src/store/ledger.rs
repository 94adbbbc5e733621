//! The budget ledger: each dataset's total, spent and reserved ε and δ in integer pico-units
//! (so the ledger is exact), and the reservations that make concurrent queries safe: reserve
//! the estimate, compute, settle the actual charge (committed with its audit entry) before the
//! answer leaves.

use prism_common::audit::store as audit;
use redb::{ReadableDatabase, ReadableTable};
use serde::{Deserialize, Serialize};

use super::{BUDGETS, DATASETS, RESERVATIONS, Store, StoreError, json, parse};

/// Privacy amounts are kept in integer pico-units (10⁻¹² ε or δ) so that the ledger's
/// arithmetic is exact under any number of charges: charges round up, totals round down.
pub const UNITS_PER_ONE: f64 = 1e12;

/// Largest total a budget may have (in ε or δ).
pub const MAX_TOTAL: f64 = 1e6;

/// Units for a charge (rounded up: never under-count).
pub fn units_up(x: f64) -> u64 {
    (x.max(0.0) * UNITS_PER_ONE).ceil() as u64
}

/// Units for a total (rounded down: never over-grant).
pub fn units_down(x: f64) -> u64 {
    (x.max(0.0) * UNITS_PER_ONE).floor() as u64
}

/// Units back to a number.
pub fn real(units: u64) -> f64 {
    units as f64 / UNITS_PER_ONE
}

/// A dataset's privacy budget ledger, in pico-units (see [`UNITS_PER_ONE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budget {
    /// Total ε the owner allows.
    pub total_epsilon: u64,
    /// Total δ the owner allows.
    pub total_delta: u64,
    /// ε committed by completed releases.
    pub spent_epsilon: u64,
    /// δ committed by completed releases.
    pub spent_delta: u64,
    /// ε held by open reservations.
    pub reserved_epsilon: u64,
    /// δ held by open reservations.
    pub reserved_delta: u64,
}

impl Budget {
    /// A fresh budget.
    pub fn new(total_epsilon: f64, total_delta: f64) -> Self {
        Budget {
            total_epsilon: units_down(total_epsilon),
            total_delta: units_down(total_delta),
            spent_epsilon: 0,
            spent_delta: 0,
            reserved_epsilon: 0,
            reserved_delta: 0,
        }
    }

    /// ε units still available.
    pub fn remaining_epsilon_units(&self) -> u64 {
        self.total_epsilon
            .saturating_sub(self.spent_epsilon)
            .saturating_sub(self.reserved_epsilon)
    }

    /// δ units still available.
    pub fn remaining_delta_units(&self) -> u64 {
        self.total_delta
            .saturating_sub(self.spent_delta)
            .saturating_sub(self.reserved_delta)
    }

    /// ε still available.
    pub fn remaining_epsilon(&self) -> f64 {
        real(self.remaining_epsilon_units())
    }

    /// δ still available.
    pub fn remaining_delta(&self) -> f64 {
        real(self.remaining_delta_units())
    }

    /// The ledger as the catalog publishes it.
    pub fn published(&self) -> prism_common::schema::PublishedBudget {
        prism_common::schema::PublishedBudget {
            total_epsilon: real(self.total_epsilon),
            total_delta: real(self.total_delta),
            spent_epsilon: real(self.spent_epsilon),
            spent_delta: real(self.spent_delta),
            remaining_epsilon: self.remaining_epsilon(),
            remaining_delta: self.remaining_delta(),
        }
    }

    /// The ledger as numbers, for APIs.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "total_epsilon": real(self.total_epsilon), "total_delta": real(self.total_delta),
            "spent_epsilon": real(self.spent_epsilon), "spent_delta": real(self.spent_delta),
            "reserved_epsilon": real(self.reserved_epsilon), "reserved_delta": real(self.reserved_delta),
            "remaining_epsilon": self.remaining_epsilon(), "remaining_delta": self.remaining_delta(),
        })
    }
}

/// Checks a budget total given by an owner.
pub fn check_total(epsilon: f64, delta: f64) -> Result<(), StoreError> {
    if epsilon.is_finite()
        && (0.0..=MAX_TOTAL).contains(&epsilon)
        && delta.is_finite()
        && (0.0..1.0).contains(&delta)
    {
        Ok(())
    } else {
        Err(StoreError::InvalidBudget(format!(
            "epsilon must be a number in [0, {MAX_TOTAL}] and delta in [0, 1); got ε={epsilon} δ={delta}"
        )))
    }
}

/// An open reservation against a dataset's budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reservation {
    /// Reservation id.
    pub id: String,
    /// Dataset.
    pub dataset: String,
    /// ε units held.
    pub epsilon: u64,
    /// δ units held.
    pub delta: u64,
    /// The coordinator's run id.
    pub run_id: String,
}

/// The budget record a dataset charges: its own (keyed by its name), or its population's
/// (`population:<name>`, which no dataset name can be).
pub fn key(dataset: &str, population: Option<&str>) -> String {
    match population {
        Some(p) => format!("population:{p}"),
        None => dataset.to_string(),
    }
}

/// A dataset record's population, read without the rest of the record (every reservation and
/// charge looks it up).
#[derive(Deserialize)]
struct Population {
    #[serde(default)]
    population: Option<String>,
}

/// [`key`] for a stored dataset record (`None`: an unknown dataset, keyed by its name).
pub(crate) fn key_of_record(dataset: &str, record: Option<&str>) -> Result<String, StoreError> {
    let population = match record {
        Some(r) => parse::<Population>(dataset, r)?.population,
        None => None,
    };
    Ok(key(dataset, population.as_deref()))
}

/// [`key`] for a stored dataset (an unknown one keys by its name).
pub(crate) fn key_of(
    datasets: &impl ReadableTable<&'static str, &'static str>,
    dataset: &str,
) -> Result<String, StoreError> {
    key_of_record(dataset, datasets.get(dataset)?.as_ref().map(|v| v.value()))
}

impl Store {
    /// Open reservations.
    pub fn open_reservations(&self) -> Result<Vec<Reservation>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(RESERVATIONS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push(parse(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// A dataset's budget.
    pub fn budget(&self, name: &str) -> Result<Budget, StoreError> {
        let txn = self.db.begin_read()?;
        let key = key_of(&txn.open_table(DATASETS)?, name)?;
        let t = txn.open_table(BUDGETS)?;
        let v = t
            .get(key.as_str())?
            .ok_or_else(|| StoreError::UnknownDataset(name.into()))?;
        parse(&key, v.value())
    }

    /// Sets a dataset's total budget (the owner's decision), audited. The total may not drop
    /// below what is already spent or reserved.
    pub fn set_budget(
        &self,
        name: &str,
        total_epsilon: f64,
        total_delta: f64,
        actor: &str,
    ) -> Result<Budget, StoreError> {
        check_total(total_epsilon, total_delta)?;
        let (te, td) = (units_down(total_epsilon), units_down(total_delta));
        let txn = self.db.begin_write()?;
        let budget = {
            let key = key_of(&txn.open_table(DATASETS)?, name)?;
            let mut t = txn.open_table(BUDGETS)?;
            let mut b: Budget = match t.get(key.as_str())? {
                Some(v) => parse(&key, v.value())?,
                None => return Err(StoreError::UnknownDataset(name.into())),
            };
            if te < b.spent_epsilon + b.reserved_epsilon || td < b.spent_delta + b.reserved_delta {
                return Err(StoreError::InvalidBudget(format!(
                    "dataset {name}: the total cannot drop below what is already spent or reserved (ε {}, δ {})",
                    real(b.spent_epsilon + b.reserved_epsilon),
                    real(b.spent_delta + b.reserved_delta)
                )));
            }
            let before = b.to_json();
            b.total_epsilon = te;
            b.total_delta = td;
            t.insert(key.as_str(), json(&b).as_str())?;
            audit::append(
                &txn,
                actor,
                "budget_set",
                name,
                bind(
                    serde_json::json!({"before": before, "after": b.to_json()}),
                    &b,
                ),
            )?;
            b
        };
        txn.commit()?;
        Ok(budget)
    }

    /// Reserves (ε, δ) against a dataset's budget, atomically, or refuses with the remainder.
    pub fn reserve(
        &self,
        name: &str,
        epsilon: f64,
        delta: f64,
        run_id: &str,
    ) -> Result<Reservation, StoreError> {
        let mut txn = self.db.begin_write()?;
        // Not fsynced on its own: a reservation lost in a crash is released at restart anyway
        // (`Store::open`), and redb serialises write transactions whatever their durability, so
        // concurrent reservations still never over-commit. The charge (`settle`) is durable.
        txn.set_durability(redb::Durability::None)
            .map_err(redb::Error::from)?;
        let res = {
            let key = key_of(&txn.open_table(DATASETS)?, name)?;
            let mut t = txn.open_table(BUDGETS)?;
            let mut b: Budget = match t.get(key.as_str())? {
                Some(v) => parse(&key, v.value())?,
                None => return Err(StoreError::UnknownDataset(name.into())),
            };
            let (ne, nd) = (units_up(epsilon), units_up(delta));
            if ne > b.remaining_epsilon_units() || nd > b.remaining_delta_units() {
                return Err(StoreError::BudgetExhausted {
                    dataset: name.into(),
                    need_epsilon: epsilon,
                    need_delta: delta,
                    remaining_epsilon: b.remaining_epsilon(),
                    remaining_delta: b.remaining_delta(),
                    total_epsilon: real(b.total_epsilon),
                });
            }
            b.reserved_epsilon += ne;
            b.reserved_delta += nd;
            t.insert(key.as_str(), json(&b).as_str())?;
            let res = Reservation {
                id: uuid::Uuid::new_v4().to_string(),
                dataset: name.into(),
                epsilon: ne,
                delta: nd,
                run_id: run_id.into(),
            };
            txn.open_table(RESERVATIONS)?
                .insert(res.id.as_str(), json(&res).as_str())?;
            res
        };
        txn.commit()?;
        Ok(res)
    }

    /// Closes a reservation: `Some((ε, δ))` charges that much (at most what was reserved);
    /// `None` releases it. Audited in the same transaction.
    pub fn settle(
        &self,
        id: &str,
        charge: Option<(f64, f64)>,
        note: &str,
        extra: serde_json::Value,
    ) -> Result<Budget, StoreError> {
        self.settle_holding(id, charge, note, extra, None)
    }

    /// [`Store::settle`], and in the same transaction keeps `answer` until the coordinator
    /// acknowledges it (`store/held.rs`): a charge is never committed without its answer.
    pub fn settle_holding(
        &self,
        id: &str,
        charge: Option<(f64, f64)>,
        note: &str,
        extra: serde_json::Value,
        answer: Option<prism_common::wire::HeldAnswer>,
    ) -> Result<Budget, StoreError> {
        let txn = self.db.begin_write()?;
        let budget = {
            let mut rt = txn.open_table(RESERVATIONS)?;
            let res: Reservation = match rt.remove(id)? {
                Some(v) => parse(id, v.value())?,
                None => return Err(StoreError::UnknownReservation(id.into())),
            };
            let key = key_of(&txn.open_table(DATASETS)?, &res.dataset)?;
            let mut bt = txn.open_table(BUDGETS)?;
            let mut b: Budget = match bt.get(key.as_str())? {
                Some(v) => parse(&key, v.value())?,
                None => return Err(StoreError::UnknownDataset(res.dataset.clone())),
            };
            b.reserved_epsilon = b.reserved_epsilon.saturating_sub(res.epsilon);
            b.reserved_delta = b.reserved_delta.saturating_sub(res.delta);
            // Never charge more than was reserved: the reservation is the promise.
            let (e, d) = charge.map_or((0, 0), |(e, d)| {
                (units_up(e).min(res.epsilon), units_up(d).min(res.delta))
            });
            b.spent_epsilon += e;
            b.spent_delta += d;
            bt.insert(key.as_str(), json(&b).as_str())?;
            audit::append(
                &txn,
                "node",
                if charge.is_some() {
                    "budget_charged"
                } else {
                    "reservation_released"
                },
                &res.dataset,
                {
                    let mut details = serde_json::json!({
                        "run_id": res.run_id, "reservation": res.id, "epsilon": real(e),
                        "delta": real(d), "note": note,
                        "remaining_epsilon": b.remaining_epsilon(),
                    });
                    if let (Some(d), serde_json::Value::Object(x)) =
                        (details.as_object_mut(), extra)
                    {
                        d.extend(x);
                    }
                    bind(details, &b)
                },
            )?;
            if let Some(answer) = answer {
                super::held::insert(
                    &txn,
                    &super::Held {
                        answer,
                        dataset: res.dataset.clone(),
                        held_at_ms: super::held::now_ms(),
                    },
                )?;
            }
            b
        };
        txn.commit()?;
        Ok(budget)
    }
}

/// The key under an audit entry's `details` that holds the resulting ledger.
pub const LEDGER_KEY: &str = "ledger";

/// The part of a budget the chain binds, in units: totals and committed spend.
pub fn snapshot(b: &Budget) -> serde_json::Value {
    serde_json::json!({
        "total_epsilon": b.total_epsilon, "total_delta": b.total_delta,
        "spent_epsilon": b.spent_epsilon, "spent_delta": b.spent_delta,
    })
}

/// `details` with the resulting ledger added (for the audit entry of a budget change).
pub fn bind(mut details: serde_json::Value, b: &Budget) -> serde_json::Value {
    match details.as_object_mut() {
        Some(d) => {
            d.insert(LEDGER_KEY.into(), snapshot(b));
            details
        }
        None => serde_json::json!({"details": details, LEDGER_KEY: snapshot(b)}),
    }
}
