//! Streaming pushdown: the exact aggregates [`super::pushdown`] asks for, computed over rows
//! read one chunk at a time (a Parquet source streamed in place), so the node holds a chunk
//! and the groups, never the dataset.
//!
//! A chunk is a small [`Dataset`] holding at least the columns [`Scan::columns`] names
//! (others are ignored); each chunk has its own text dictionaries. The result is what a
//! database computes for the same rows: one [`SourceGroup`] per group present among the
//! selected rows (the one group of an ungrouped query always). With a privacy unit, each unit
//! keeps its first `max_rows` selected rows, in its first `max_groups` groups, in scan order:
//! the in-memory rule of `units.rs`, carried across chunks (its state is one entry per
//! distinct unit seen).

use std::collections::HashMap;

use super::grouping::{NONE, data_groups};
use super::pushdown::{Measure, Pushdown, SourceGroup};
use crate::eval::{GroupKey, filter_mask};
use crate::plan::Predicate;
use crate::schema::{ColumnData, Dataset};

/// The groups and measures so far.
pub struct Scan {
    push: Pushdown,
    filter: Option<Predicate>,
    index: HashMap<GroupKey, u32>,
    keys: Vec<GroupKey>,
    /// `keys.len() × measures`, row-major.
    values: Vec<i128>,
    units: HashMap<u64, Seen>,
    /// Text units: value → identity, shared by every chunk's dictionary.
    text_units: HashMap<String, u64>,
    rows: u64,
}

#[derive(Default)]
struct Seen {
    rows: u32,
    groups: Vec<u32>,
}

impl Scan {
    /// A scan computing `push` over the rows `filter` selects.
    pub fn new(push: Pushdown, filter: Option<Predicate>) -> Self {
        Scan {
            push,
            filter,
            index: HashMap::new(),
            keys: Vec::new(),
            values: Vec::new(),
            units: HashMap::new(),
            text_units: HashMap::new(),
            rows: 0,
        }
    }

    /// The columns a chunk must hold: GROUP BY, WHERE, measured and unit columns, each once.
    pub fn columns(&self) -> Vec<String> {
        Self::columns_of(&self.push, self.filter.as_ref())
    }

    /// [`Scan::columns`] of a scan of `push` over the rows `filter` selects, before one exists.
    pub fn columns_of(push: &Pushdown, filter: Option<&Predicate>) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut add = |c: &str| {
            if !out.iter().any(|o| o.eq_ignore_ascii_case(c)) {
                out.push(c.to_string());
            }
        };
        push.group_by.iter().for_each(|c| add(c));
        if let Some(f) = filter {
            f.columns().into_iter().for_each(&mut add);
        }
        for m in &push.measures {
            match m {
                Measure::Rows => {}
                Measure::NonNull { column } | Measure::ClampedSum { column, .. } => add(column),
            }
        }
        if let Some(u) = &push.unit {
            add(&u.column);
        }
        out
    }

    /// Rows scanned so far (selected or not).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    fn column<'a>(chunk: &'a Dataset, name: &str) -> Result<&'a ColumnData, String> {
        chunk
            .column(name)
            .map(|(_, d)| d)
            .ok_or_else(|| format!("the chunk has no column {name}"))
    }

    /// Adds one chunk's rows.
    pub fn add(&mut self, chunk: &Dataset) -> Result<(), String> {
        if chunk.columns.len() != chunk.schema.columns.len()
            || chunk.columns.iter().any(|c| c.len() != chunk.rows)
        {
            return Err("the chunk's column data does not match its schema".into());
        }
        let width = self.push.measures.len();
        let mask = filter_mask(self.filter.as_ref(), chunk).map_err(|e| e.to_string())?;
        let cols = self
            .push
            .group_by
            .iter()
            .map(|g| {
                chunk
                    .schema
                    .column_index(g)
                    .ok_or_else(|| format!("the chunk has no column {g}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let groups =
            data_groups(chunk, &self.push.group_by, &cols, &mask).map_err(|e| e.to_string())?;
        let global: Vec<u32> = groups
            .keys
            .into_iter()
            .map(|k| {
                let next = self.keys.len() as u32;
                *self.index.entry(k).or_insert_with_key(|k| {
                    self.keys.push(k.clone());
                    self.values.extend(std::iter::repeat_n(0, width));
                    next
                })
            })
            .collect();
        let mut gid: Vec<u32> = groups
            .gid
            .iter()
            .map(|&g| if g == NONE { NONE } else { global[g as usize] })
            .collect();
        if let Some(u) = self.push.unit.clone() {
            let data = Self::column(chunk, &u.column)?;
            self.bound(&mut gid, data, u.max_rows, u.max_groups);
        }
        for (m, measure) in self.push.measures.iter().enumerate() {
            let cell = |g: u32| g as usize * width + m;
            let values = &mut self.values;
            match measure {
                Measure::Rows => {
                    for &g in gid.iter().filter(|&&g| g != NONE) {
                        values[cell(g)] += 1;
                    }
                }
                Measure::NonNull { column } => {
                    let data = Self::column(chunk, column)?;
                    for (i, &g) in gid.iter().enumerate() {
                        if g != NONE && !data.is_null(i) {
                            values[cell(g)] += 1;
                        }
                    }
                }
                Measure::ClampedSum {
                    column,
                    unit,
                    lo,
                    hi,
                    center,
                    ..
                } => match Self::column(chunk, column)? {
                    ColumnData::Integer(v) => {
                        for (x, &g) in v.iter().zip(&gid) {
                            if let (Some(x), true) = (x, g != NONE) {
                                let x = x.saturating_mul(*unit).clamp(*lo, *hi);
                                values[cell(g)] += i128::from(x - center);
                            }
                        }
                    }
                    ColumnData::Float(v) => {
                        let scale = *unit as f64;
                        for (x, &g) in v.iter().zip(&gid) {
                            if let (Some(x), true) = (x, g != NONE) {
                                // `as` saturates and maps NaN to 0, as in memory.
                                let x = ((x * scale).round() as i64).clamp(*lo, *hi);
                                values[cell(g)] += i128::from(x - center);
                            }
                        }
                    }
                    _ => return Err(format!("column {column} is not numeric")),
                },
            }
        }
        self.rows += chunk.rows as u64;
        Ok(())
    }

    /// Drops (sets to [`NONE`]) the selected rows beyond their unit's bounds, remembering
    /// what each unit has contributed in earlier chunks.
    fn bound(&mut self, gid: &mut [u32], unit: &ColumnData, max_rows: u32, max_groups: u32) {
        let text: Vec<u64> = match unit {
            ColumnData::Text { dict, .. } => dict
                .iter()
                .map(|s| {
                    let next = self.text_units.len() as u64;
                    *self.text_units.entry(s.clone()).or_insert(next)
                })
                .collect(),
            _ => Vec::new(),
        };
        let id = |i: usize| -> Option<u64> {
            match unit {
                ColumnData::Integer(v) => v[i].map(|x| x as u64),
                ColumnData::Text { codes, .. } => {
                    codes[i].and_then(|c| text.get(c as usize)).copied()
                }
                ColumnData::Boolean(v) => v[i].map(u64::from),
                ColumnData::Float(v) => v[i].map(f64::to_bits),
            }
        };
        for (i, g) in gid.iter_mut().enumerate() {
            if *g == NONE {
                continue;
            }
            let Some(id) = id(i) else {
                *g = NONE;
                continue;
            };
            let s = self.units.entry(id).or_default();
            let known = s.groups.contains(&*g);
            if s.rows >= max_rows || (!known && s.groups.len() >= max_groups as usize) {
                *g = NONE;
                continue;
            }
            if !known {
                s.groups.push(*g);
            }
            s.rows += 1;
        }
    }

    /// Adds the rows another scan of the same pushdown saw (another share of the same
    /// source). Refused with a privacy unit: its bound depends on the order of the rows, so
    /// such a source is scanned as one.
    pub fn merge(&mut self, other: Scan) -> Result<(), String> {
        if self.push != other.push || self.filter != other.filter {
            return Err("the scans computed different queries".into());
        }
        if self.push.unit.is_some() {
            return Err("a privacy unit is bounded in scan order: scan it as one".into());
        }
        let width = self.push.measures.len();
        for (key, v) in other
            .keys
            .into_iter()
            .zip(other.values.chunks(width.max(1)))
        {
            let next = self.keys.len() as u32;
            let g = *self.index.entry(key).or_insert_with_key(|k| {
                self.keys.push(k.clone());
                self.values.extend(std::iter::repeat_n(0, width));
                next
            }) as usize;
            for (m, x) in v.iter().enumerate() {
                self.values[g * width + m] += x;
            }
        }
        self.rows += other.rows;
        Ok(())
    }

    /// The groups present, with their measures (a grouped query's groups whose every row was
    /// dropped by the unit bound are not present).
    pub fn finish(self) -> Vec<SourceGroup> {
        let width = self.push.measures.len();
        let grouped = !self.push.group_by.is_empty();
        let mut out: Vec<SourceGroup> = self
            .keys
            .into_iter()
            .zip(self.values.chunks(width.max(1)))
            .map(|(key, v)| SourceGroup {
                key,
                values: v.to_vec(),
            })
            .filter(|g| !grouped || g.values.first().is_some_and(|&n| n > 0))
            .collect();
        if !grouped && out.is_empty() {
            out.push(SourceGroup {
                key: Vec::new(),
                values: vec![0; width],
            });
        }
        out
    }
}
