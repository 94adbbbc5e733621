//! The public shape of an HE query: what a node is told (columns, operators, how many
//! constants, public encodings) and nothing it must not learn.
//!
//! Encodings are public; only constants are secret. A text column's codes are positions in its
//! domain ([`TextDomain`]), and a constant outside the domain gets the code `len`, which no row
//! has. An integer (or boolean, as 0/1) column with declared bounds `[min, max]` codes a value `x`
//! as `x - min + 1`; a constant is clamped into `[min - 1, max + 1]` first, which keeps every
//! comparison with an in-bounds value unchanged, so codes stay in `0..=max - min + 2`.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::bits_for;
use crate::plan::CmpOp;
use crate::schema::ColumnSpec;

/// What a node is asked to compute: columns, operators and counts; never a constant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HeQuery {
    /// Dataset name on the node.
    pub dataset: String,
    /// The encrypted values to return, in order.
    pub values: Vec<HeValue>,
    /// The WHERE as a conjunction, one entry per filtered column.
    pub filter: Vec<FilterColumn>,
}

/// One encrypted value a node returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HeValue {
    /// Rows that pass the filter.
    CountRows,
    /// Of those, rows where the column is not null.
    CountNonNull {
        /// Column.
        column: String,
    },
    /// Sum of `value - lower bound` over them.
    Sum {
        /// Column.
        column: String,
    },
    /// Smallest `value - lower bound` over them (0 when there is none).
    Min {
        /// Column.
        column: String,
    },
    /// Largest `value - lower bound` over them (0 when there is none).
    Max {
        /// Column.
        column: String,
    },
}

impl HeValue {
    /// The aggregated column, if any.
    pub fn column(&self) -> Option<&str> {
        match self {
            HeValue::CountRows => None,
            HeValue::CountNonNull { column }
            | HeValue::Sum { column }
            | HeValue::Min { column }
            | HeValue::Max { column } => Some(column),
        }
    }
}

/// The predicates on one column (ANDed), and how its constants are encoded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterColumn {
    /// Column name.
    pub column: String,
    /// Public encoding of its values and constants.
    pub encoding: Encoding,
    /// Predicates on it; each takes [`Atom::constants`] encrypted constants.
    pub atoms: Vec<Atom>,
}

/// How a filter column's values and constants become unsigned codes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// Position in the column's [`TextDomain`]; `len` means "not in the domain".
    Text {
        /// Domain size.
        len: u32,
        /// [`TextDomain::digest`] of the domain the constants were encoded against.
        digest: String,
    },
    /// `value - min + 1` for values in `[min, max]` (booleans: `[0, 1]`).
    Integer {
        /// Lower bound (declared).
        min: i64,
        /// Upper bound (declared).
        max: i64,
    },
}

impl Encoding {
    /// Largest code a constant can have.
    pub fn max_code(&self) -> u64 {
        match self {
            Encoding::Text { len, .. } => u64::from(*len),
            Encoding::Integer { min, max } => {
                (i128::from(*max) - i128::from(*min) + 2).clamp(0, i128::from(u64::MAX)) as u64
            }
        }
    }

    /// Bits of a constant's code.
    pub fn bits(&self) -> u32 {
        bits_for(self.max_code())
    }

    /// The code of an integer value, `None` when it lies outside the bounds (or the encoding is
    /// not an integer one).
    pub fn int_code(&self, x: i64) -> Option<u64> {
        match self {
            Encoding::Integer { min, max } if (*min..=*max).contains(&x) => {
                Some((i128::from(x) - i128::from(*min) + 1) as u64)
            }
            _ => None,
        }
    }
}

/// A predicate on one column.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Atom {
    /// `col op c`.
    Compare {
        /// Operator.
        op: CmpOp,
    },
    /// `col [NOT] IN (c1, .., cn)`.
    In {
        /// Number of constants.
        count: u32,
        /// `NOT IN`.
        negated: bool,
    },
    /// `col [NOT] BETWEEN c1 AND c2`.
    Between {
        /// `NOT BETWEEN`.
        negated: bool,
    },
}

impl Atom {
    /// How many encrypted constants it takes.
    pub fn constants(&self) -> usize {
        match self {
            Atom::Compare { .. } => 1,
            Atom::In { count, .. } => *count as usize,
            Atom::Between { .. } => 2,
        }
    }
}

impl HeQuery {
    /// Bits of each encrypted constant, in the order they travel.
    pub fn constant_bits(&self) -> Vec<u32> {
        self.filter
            .iter()
            .flat_map(|f| {
                let n: usize = f.atoms.iter().map(Atom::constants).sum();
                std::iter::repeat_n(f.encoding.bits(), n)
            })
            .collect()
    }

    /// Whether a node must evaluate anything homomorphically.
    pub fn has_constants(&self) -> bool {
        !self.filter.is_empty()
    }
}

/// The public domain of a text column: the values its codes index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TextDomain {
    /// Column name.
    pub column: String,
    /// Values; a code is a position here.
    pub values: Vec<String>,
    /// SHA-256 of the values (hex, 32 digits), so a node can tell a stale encoding.
    pub digest: String,
}

impl TextDomain {
    /// The domain of a text column: its declared public keys when they cover every value the
    /// data holds (then nothing beyond the catalog is revealed), else the sorted union of the
    /// public keys and the data's distinct values.
    pub fn of(spec: &ColumnSpec, dict: &[String]) -> TextDomain {
        let declared = spec.public_keys.clone().unwrap_or_default();
        let values = if !declared.is_empty() && dict.iter().all(|d| declared.contains(d)) {
            declared
        } else {
            let mut all: Vec<String> = declared.into_iter().chain(dict.iter().cloned()).collect();
            all.sort();
            all.dedup();
            all
        };
        let digest = domain_digest(&values);
        TextDomain {
            column: spec.name.clone(),
            values,
            digest,
        }
    }
}

/// Digest of a domain's values.
pub fn domain_digest(values: &[String]) -> String {
    let mut h = Sha256::new();
    for v in values {
        h.update((v.len() as u64).to_be_bytes());
        h.update(v.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}
