//! Parquet file sources: a Parquet file, or a directory of Parquet files, read in place into
//! the normal in-memory [`Dataset`], exactly like a CSV file source ([`super::csv`]).
//!
//! The owner's declaration is the authority: each declared column must be a top-level column of
//! every file with a compatible type (integers for `integer`; floats or integers for `float`;
//! booleans; UTF-8 strings for `text`), and only the declared columns are read (a projection;
//! other columns in the file are never decoded). A null is a null, refused in a column declared
//! `not_null` or the privacy unit, as an empty CSV cell is; a NaN or infinite float is refused
//! with its row. Files are read one record batch at a time, so memory beyond the dataset itself
//! stays bounded by a batch. The arrow schema a writer may embed is ignored: the Parquet
//! schema alone decides the types, so a pandas category column reads as plain strings.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use ::parquet::arrow::ProjectionMask;
use ::parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, new_empty_array};
use arrow_schema::{DataType, Schema};
use prism_common::schema::{ColumnData, ColumnSpec, ColumnType, Dataset, DatasetSchema};

use super::SourceError;
use crate::import::{Interner, empty_column};

/// Rows per record batch: what the reader holds beyond the dataset while it reads.
const BATCH_ROWS: usize = 8192;

/// Rows per chunk of a streamed source: what a query holds of it at a time, per column read.
pub const STREAM_ROWS: usize = 65_536;

/// Reads a Parquet source into a dataset with the declared columns.
pub fn read(name: &str, columns: &[ColumnSpec], path: &Path) -> Result<Dataset, SourceError> {
    let mut out = Columns::new(columns, BATCH_ROWS, None);
    read_files(&mut out, path)?;
    Ok(Dataset {
        schema: schema(name, columns),
        columns: out.data,
        rows: out.rows,
    })
}

/// How many shares a scan of a source is cut into: one per core, at most 4.
pub fn shares() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Runs `work(part, parts)` for every share on its own thread, and returns the results in
/// share order (the first error, if any). A panic on a malformed file refuses the source.
pub fn in_shares<T: Send>(
    parts: usize,
    path: &Path,
    work: impl Fn(usize, usize) -> Result<T, SourceError> + Sync,
) -> Result<Vec<T>, SourceError> {
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..parts)
            .map(|part| {
                let work = &work;
                s.spawn(move || work(part, parts))
            })
            .collect();
        workers
            .into_iter()
            .map(|w| {
                w.join().unwrap_or_else(|_| {
                    Err(invalid(
                        path,
                        "the Parquet reader failed on malformed data; the file is corrupt".into(),
                    ))
                })
            })
            .collect()
    })
}

/// Reads and checks every row of a source as [`read`] does, keeping none, one share of the
/// row groups per core; returns the number of rows (refused when there is none).
pub fn census(name: &str, columns: &[ColumnSpec], path: &Path) -> Result<u64, SourceError> {
    let counts = in_shares(shares(), path, |part, parts| {
        stream_part(name, columns, path, (part, parts), &mut |_| Ok(()))
    })?;
    let rows = counts.iter().sum();
    if rows == 0 {
        return Err(SourceError::Invalid {
            source_name: path.display().to_string(),
            message: "the Parquet data has no rows; nothing was read".into(),
        });
    }
    Ok(rows)
}

/// Streams one of `parts` disjoint shares of a Parquet source: the row groups whose index,
/// counted across the files in order, is `part` modulo `parts` (the shares together are the
/// source, each row once; a share may hold no row). Only `columns` (the declared columns, or
/// some of them) are read, [`STREAM_ROWS`] rows a chunk, each chunk a dataset with its own
/// text dictionaries, handed to `f` in file and row order and then dropped. Every value is
/// checked as [`read`] checks it. Returns the number of rows.
pub fn stream_part(
    name: &str,
    columns: &[ColumnSpec],
    path: &Path,
    (part, parts): (usize, usize),
    f: &mut dyn FnMut(Dataset) -> Result<(), SourceError>,
) -> Result<u64, SourceError> {
    let schema = schema(name, columns);
    let mut sink = |data: Vec<ColumnData>, rows: usize| {
        f(Dataset {
            schema: schema.clone(),
            columns: data,
            rows,
        })
    };
    let mut out = Columns::new(columns, STREAM_ROWS, Some(&mut sink));
    out.share = Some((part, parts.max(1)));
    for file in super::files(path, "parquet")? {
        guarded(&file, || out.read_file(&file))?;
    }
    Ok(out.rows as u64)
}

fn schema(name: &str, columns: &[ColumnSpec]) -> DatasetSchema {
    DatasetSchema {
        name: name.into(),
        columns: columns.to_vec(),
    }
}

/// Runs `read` on `file`. The reader is not guaranteed to be panic-free on a malformed file; a
/// panic there refuses the source instead of taking down the blocking thread's task.
fn guarded(file: &Path, read: impl FnOnce() -> Result<(), SourceError>) -> Result<(), SourceError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(read)).unwrap_or_else(|_| {
        Err(invalid(
            file,
            "the Parquet reader failed on malformed data; the file is corrupt".into(),
        ))
    })
}

fn read_files(out: &mut Columns, path: &Path) -> Result<(), SourceError> {
    for file in super::files(path, "parquet")? {
        guarded(&file, || out.read_file(&file))?;
    }
    if out.rows == 0 {
        return Err(SourceError::Invalid {
            source_name: path.display().to_string(),
            message: "the Parquet data has no rows; nothing was read".into(),
        });
    }
    Ok(())
}

fn invalid(file: &Path, message: String) -> SourceError {
    SourceError::Invalid {
        source_name: file.display().to_string(),
        message,
    }
}

/// Where each record batch goes once appended: a streamed source hands the batch on (its
/// columns and rows) and starts the next one empty.
type Sink<'s> = &'s mut dyn FnMut(Vec<ColumnData>, usize) -> Result<(), SourceError>;

/// The declared columns as they fill up, across every file of the source (or one batch at a
/// time, with a sink).
struct Columns<'a, 's> {
    specs: &'a [ColumnSpec],
    data: Vec<ColumnData>,
    // One dictionary per text column, shared by all files (by one batch, with a sink).
    dicts: Vec<Interner>,
    rows: usize,
    batch_rows: usize,
    sink: Option<Sink<'s>>,
    /// Read only this share of the row groups: (part, parts), see [`stream_part`].
    share: Option<(usize, usize)>,
    /// Row groups seen so far, across files (for the share).
    row_groups: usize,
}

impl<'a, 's> Columns<'a, 's> {
    fn new(specs: &'a [ColumnSpec], batch_rows: usize, sink: Option<Sink<'s>>) -> Self {
        Columns {
            specs,
            data: specs.iter().map(|c| empty_column(c.ty)).collect(),
            dicts: specs.iter().map(|_| Interner::default()).collect(),
            rows: 0,
            batch_rows,
            sink,
            share: None,
            row_groups: 0,
        }
    }

    /// Hands the batch just appended to the sink, if there is one.
    fn pass_on(&mut self, rows: usize) -> Result<(), SourceError> {
        let Some(sink) = self.sink.as_mut() else {
            return Ok(());
        };
        let fresh = self.specs.iter().map(|c| empty_column(c.ty)).collect();
        let data = std::mem::replace(&mut self.data, fresh);
        self.dicts.iter_mut().for_each(|d| *d = Interner::default());
        sink(data, rows)
    }

    fn read_file(&mut self, file: &Path) -> Result<(), SourceError> {
        let f = File::open(file).map_err(|e| SourceError::Unavailable {
            source_name: file.display().to_string(),
            message: e.to_string(),
        })?;
        let unreadable = |e: ::parquet::errors::ParquetError| {
            invalid(file, format!("not a readable Parquet file: {e}"))
        };
        let options = ArrowReaderOptions::new().with_skip_arrow_metadata(true);
        let meta = ArrowReaderMetadata::load(&f, options.clone()).map_err(unreadable)?;
        let roots = self.locate(file, meta.schema())?;
        // Text columns are read as dictionary arrays: their codes, not a string per row.
        let hinted = Schema::new(
            meta.schema()
                .fields()
                .iter()
                .enumerate()
                .map(|(i, field)| match field.data_type() {
                    DataType::Utf8 | DataType::LargeUtf8
                        if roots
                            .iter()
                            .zip(self.specs)
                            .any(|(&r, c)| r == i && c.ty == ColumnType::Text) =>
                    {
                        Arc::new(field.as_ref().clone().with_data_type(DataType::Dictionary(
                            Box::new(DataType::Int32),
                            Box::new(field.data_type().clone()),
                        )))
                    }
                    _ => field.clone(),
                })
                .collect::<Vec<_>>(),
        );
        let meta = ArrowReaderMetadata::try_new(
            meta.metadata().clone(),
            options.with_schema(Arc::new(hinted)),
        )
        .map_err(unreadable)?;
        let groups = meta.metadata().num_row_groups();
        let mine: Option<Vec<usize>> = self.share.map(|(part, parts)| {
            (0..groups)
                .filter(|g| (self.row_groups + g) % parts == part)
                .collect()
        });
        self.row_groups += groups;
        let mut builder = ParquetRecordBatchReaderBuilder::new_with_metadata(f, meta);
        if let Some(mine) = mine {
            builder = builder.with_row_groups(mine);
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots.iter().copied());
        // The projected batch holds the declared columns in file order: declared column `ci`
        // is at the rank of its root among the roots read.
        let at: Vec<usize> = roots
            .iter()
            .map(|r| roots.iter().filter(|&o| o < r).count())
            .collect();
        let reader = builder
            .with_projection(mask)
            .with_batch_size(self.batch_rows)
            .build()
            .map_err(|e| invalid(file, format!("not a readable Parquet file: {e}")))?;
        let mut row = 0usize; // rows of this file read so far
        for batch in reader {
            let batch = batch.map_err(|e| {
                invalid(
                    file,
                    format!("unreadable after row {row}: {e}; nothing was read"),
                )
            })?;
            for (ci, &bi) in at.iter().enumerate() {
                let col = batch.columns().get(bi).ok_or_else(|| {
                    invalid(
                        file,
                        format!(
                            "column {} is missing from a record batch",
                            self.specs[ci].name
                        ),
                    )
                })?;
                self.append(ci, col.as_ref()).map_err(|(i, message)| {
                    invalid(
                        file,
                        format!("row {}: {message}; nothing was read", row + i + 1),
                    )
                })?;
            }
            row += batch.num_rows();
            self.pass_on(batch.num_rows())?;
        }
        self.rows += row;
        Ok(())
    }

    /// The root index in the file of each declared column, after checking its type.
    fn locate(&self, file: &Path, schema: &Schema) -> Result<Vec<usize>, SourceError> {
        let fields = schema.fields();
        let mut roots = Vec::with_capacity(self.specs.len());
        for spec in self.specs {
            let found = fields
                .iter()
                .position(|f| f.name() == &spec.name)
                .or_else(|| {
                    fields
                        .iter()
                        .position(|f| f.name().eq_ignore_ascii_case(&spec.name))
                });
            let Some(i) = found else {
                return Err(SourceError::MissingColumn {
                    source_name: file.display().to_string(),
                    column: spec.name.clone(),
                    present: fields
                        .iter()
                        .map(|f| f.name().as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                });
            };
            let dt = fields[i].data_type();
            if !compatible(spec.ty, dt) {
                return Err(invalid(
                    file,
                    format!(
                        "column {} is declared {} but is {dt} in the file; declare the type the \
                         file has, or convert the column",
                        spec.name, spec.ty
                    ),
                ));
            }
            roots.push(i);
        }
        Ok(roots)
    }

    /// Appends one batch of column `ci`; `Err((index in the batch, why))`.
    fn append(&mut self, ci: usize, col: &dyn Array) -> Result<(), (usize, String)> {
        let spec = &self.specs[ci];
        if (spec.not_null || spec.privacy_unit.is_some()) && col.null_count() > 0 {
            let i = (0..col.len()).find(|&i| col.is_null(i)).unwrap_or_default();
            return Err((
                i,
                format!(
                    "column {} is declared not_null (or is the privacy unit) but the value is null",
                    spec.name
                ),
            ));
        }
        let mismatch = || {
            (
                0,
                format!("column {} changed type within the file", spec.name),
            )
        };
        match &mut self.data[ci] {
            ColumnData::Integer(v) => {
                v.extend(integers(col).ok_or_else(mismatch)?.map_err(|i| {
                    (
                        i,
                        format!(
                            "column {}: the value does not fit a 64-bit signed integer; \
                             declare the column float, or convert it",
                            spec.name
                        ),
                    )
                })?)
            }
            ColumnData::Float(v) => {
                let xs = floats(col).ok_or_else(mismatch)?;
                if let Some(i) = xs.iter().position(|x| x.is_some_and(|x| !x.is_finite())) {
                    return Err((
                        i,
                        format!(
                            "column {}: {} is not a finite number",
                            spec.name,
                            xs[i].unwrap_or_default()
                        ),
                    ));
                }
                v.extend(xs)
            }
            ColumnData::Boolean(v) => v.extend(col.as_boolean_opt().ok_or_else(mismatch)?.iter()),
            ColumnData::Text { dict, codes } => {
                let d = &mut self.dicts[ci];
                if let Some(keys) = col.as_dictionary_opt::<Int32Type>() {
                    // Each distinct value used is interned once; rows get its code.
                    let values = strings(keys.values().as_ref()).ok_or_else(mismatch)?;
                    let mut code = vec![u32::MAX; values.len()];
                    let required = spec.not_null || spec.privacy_unit.is_some();
                    for (i, k) in keys.keys().iter().enumerate() {
                        let c = match k {
                            None => None,
                            Some(k) => {
                                let k = usize::try_from(k).map_err(|_| mismatch())?;
                                let slot = code.get_mut(k).ok_or_else(mismatch)?;
                                if *slot == u32::MAX {
                                    *slot = match values[k] {
                                        Some(v) => d.intern(dict, v),
                                        None => u32::MAX - 1,
                                    };
                                }
                                (*slot != u32::MAX - 1).then_some(*slot)
                            }
                        };
                        if required && c.is_none() {
                            return Err((
                                i,
                                format!(
                                    "column {} is declared not_null (or is the privacy unit) but \
                                     the value is null",
                                    spec.name
                                ),
                            ));
                        }
                        codes.push(c);
                    }
                } else {
                    let strs = strings(col).ok_or_else(mismatch)?;
                    codes.extend(strs.into_iter().map(|s| s.map(|s| d.intern(dict, s))))
                }
            }
        }
        Ok(())
    }
}

/// Whether a Parquet column of arrow type `dt` can be read as a declared `ty` column.
fn compatible(ty: ColumnType, dt: &DataType) -> bool {
    let empty = new_empty_array(dt);
    match ty {
        ColumnType::Integer => integers(empty.as_ref()).is_some(),
        ColumnType::Float => floats(empty.as_ref()).is_some(),
        ColumnType::Boolean => empty.as_boolean_opt().is_some(),
        ColumnType::Text => strings(empty.as_ref()).is_some(),
    }
}

/// An integer column's values as `i64`; `None`: not an integer column; `Err(i)`: value `i` of an
/// unsigned 64-bit column does not fit.
fn integers(col: &dyn Array) -> Option<Result<Vec<Option<i64>>, usize>> {
    macro_rules! widen {
        ($t:ty) => {
            col.as_primitive_opt::<$t>()
                .map(|a| Ok(a.iter().map(|v| v.map(i64::from)).collect()))
        };
    }
    match col.data_type() {
        DataType::Int8 => widen!(Int8Type),
        DataType::Int16 => widen!(Int16Type),
        DataType::Int32 => widen!(Int32Type),
        DataType::Int64 => widen!(Int64Type),
        DataType::UInt8 => widen!(UInt8Type),
        DataType::UInt16 => widen!(UInt16Type),
        DataType::UInt32 => widen!(UInt32Type),
        DataType::UInt64 => col.as_primitive_opt::<UInt64Type>().map(|a| {
            a.iter()
                .enumerate()
                .map(|(i, v)| v.map(|x| i64::try_from(x).map_err(|_| i)).transpose())
                .collect()
        }),
        _ => None,
    }
}

/// A float (or integer) column's values as `f64`.
fn floats(col: &dyn Array) -> Option<Vec<Option<f64>>> {
    match col.data_type() {
        DataType::Float32 => col
            .as_primitive_opt::<Float32Type>()
            .map(|a| a.iter().map(|v| v.map(f64::from)).collect()),
        DataType::Float64 => col
            .as_primitive_opt::<Float64Type>()
            .map(|a| a.iter().collect()),
        DataType::UInt64 => col
            .as_primitive_opt::<UInt64Type>()
            .map(|a| a.iter().map(|v| v.map(|x| x as f64)).collect()),
        _ => integers(col)?
            .ok()
            .map(|v| v.into_iter().map(|x| x.map(|x| x as f64)).collect()),
    }
}

/// A UTF-8 string column's values.
fn strings(col: &dyn Array) -> Option<Vec<Option<&str>>> {
    match col.data_type() {
        DataType::Utf8 => col.as_string_opt::<i32>().map(|a| a.iter().collect()),
        DataType::LargeUtf8 => col.as_string_opt::<i64>().map(|a| a.iter().collect()),
        DataType::Utf8View => col.as_string_view_opt().map(|a| a.iter().collect()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
