//! Columnar import: a CSV upload parsed as it arrives and written, a chunk at a time, as
//! Parquet in the node's own directory beside its store (`<store>.columnar/<dataset>/<id>/`),
//! then served as a streamed Parquet source (`crate::sources`): queries scan the columns
//! they need and the node never holds the dataset, so a dataset may be larger than memory.
//!
//! The upload is checked exactly as a CSV import is ([`crate::import::Rows`]) and is all or
//! nothing: the files are written under a temporary name and published by one rename, then
//! registered in one store transaction; a bad row, a broken upload or a full disk leaves no
//! file and no dataset. Parsing and Parquet encoding run on two threads, a bounded queue of
//! chunks between them, so memory stays at a few chunks whatever the file's size.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::{ArrayRef, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use prism_common::schema::{ColumnData, ColumnSpec, ColumnType};

use crate::import::{ImportError, Rows, reader};
use crate::sources::parquet::STREAM_ROWS;

/// Rows per Parquet row group.
const ROW_GROUP_ROWS: usize = 1 << 20;

/// Why a columnar import failed.
#[derive(Debug, thiserror::Error)]
pub enum ColumnarError {
    /// The upload is not acceptable (name, declaration, header, a row).
    #[error(transparent)]
    Import(#[from] ImportError),
    /// The upload stopped before its end.
    #[error("the upload broke off: {0}; nothing was imported")]
    Upload(String),
    /// The node could not write the files.
    #[error("the node could not write the dataset's files ({0}); nothing was imported")]
    Storage(String),
}

/// Where a node keeps its columnar datasets: beside its store file.
pub fn root(data_path: &Path) -> PathBuf {
    let mut name = data_path.file_stem().unwrap_or_default().to_os_string();
    name.push(".columnar");
    data_path.with_file_name(name)
}

/// Whether `path` is one of the node's own columnar datasets (removed when it is replaced).
pub fn owned(data_path: &Path, path: &Path) -> bool {
    path.starts_with(root(data_path))
}

fn storage(e: impl std::fmt::Display) -> ColumnarError {
    ColumnarError::Storage(e.to_string())
}

fn arrow_schema(columns: &[ColumnSpec]) -> Arc<Schema> {
    Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| {
                let ty = match c.ty {
                    ColumnType::Integer => DataType::Int64,
                    ColumnType::Float => DataType::Float64,
                    ColumnType::Boolean => DataType::Boolean,
                    ColumnType::Text => DataType::Utf8,
                };
                Field::new(&c.name, ty, true)
            })
            .collect::<Vec<_>>(),
    ))
}

fn batch(schema: &Arc<Schema>, data: Vec<ColumnData>) -> Result<RecordBatch, ColumnarError> {
    let arrays: Vec<ArrayRef> = data
        .into_iter()
        .map(|c| -> ArrayRef {
            match c {
                ColumnData::Integer(v) => Arc::new(Int64Array::from(v)),
                ColumnData::Float(v) => Arc::new(Float64Array::from(v)),
                ColumnData::Boolean(v) => Arc::new(BooleanArray::from(v)),
                ColumnData::Text { dict, codes } => Arc::new(
                    codes
                        .iter()
                        .map(|c| c.map(|c| dict[c as usize].as_str()))
                        .collect::<StringArray>(),
                ),
            }
        })
        .collect();
    RecordBatch::try_new(schema.clone(), arrays).map_err(storage)
}

/// Parses `input` (CSV with a header) against `columns` and writes it as Parquet to
/// `dir/part-00000.parquet`; returns the number of rows. On error `dir` is removed.
pub fn write(columns: Vec<ColumnSpec>, input: impl Read, dir: &Path) -> Result<u64, ColumnarError> {
    let written = write_files(columns, input, dir);
    if written.is_err() {
        let _ = std::fs::remove_dir_all(dir);
    }
    written
}

/// Removes what an import interrupted by a crash left: unfinished uploads, and published
/// directories no source record names (a crash between publishing and registering).
pub fn sweep(data_path: &Path, named: &[PathBuf]) {
    let Ok(datasets) = std::fs::read_dir(root(data_path)) else {
        return;
    };
    for dataset in datasets.flatten() {
        let Ok(copies) = std::fs::read_dir(dataset.path()) else {
            continue;
        };
        for copy in copies.flatten() {
            let path = copy.path();
            if path.is_dir() && !named.contains(&path) {
                tracing::info!(path = %path.display(), "removing an unregistered columnar copy");
                let _ = std::fs::remove_dir_all(&path);
            }
        }
    }
}

fn write_files(
    columns: Vec<ColumnSpec>,
    input: impl Read,
    dir: &Path,
) -> Result<u64, ColumnarError> {
    std::fs::create_dir_all(dir).map_err(storage)?;
    let schema = arrow_schema(&columns);
    let file = std::fs::File::create(dir.join("part-00000.parquet")).map_err(storage)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props)).map_err(storage)?;
    // The encoder's thread: batches in, Parquet out.
    let (tx, rx) = std::sync::mpsc::sync_channel::<RecordBatch>(2);
    let encoder = std::thread::Builder::new()
        .name("columnar-encode".into())
        .spawn(move || -> Result<(), ColumnarError> {
            for b in rx {
                writer.write(&b).map_err(storage)?;
            }
            writer.close().map_err(storage)?;
            Ok(())
        })
        .map_err(storage)?;
    let parsed = (|| -> Result<u64, ColumnarError> {
        let mut reader = reader(input);
        let mut rows = Rows::new(columns, &mut reader)?;
        let mut record = csv::StringRecord::new();
        loop {
            let more = rows.read(&mut reader, &mut record)?;
            if rows.rows >= STREAM_ROWS || (!more && rows.rows > 0) {
                let (data, _) = rows.take();
                if tx.send(batch(&schema, data)?).is_err() {
                    // The encoder stopped: its error is the one to report.
                    break;
                }
            }
            if !more {
                break;
            }
        }
        Ok(rows.total)
    })();
    drop(tx);
    let encoded = encoder
        .join()
        .unwrap_or_else(|_| Err(storage("the Parquet encoder failed")));
    let total = parsed?;
    encoded?;
    if total == 0 {
        return Err(ImportError::Empty.into());
    }
    let f = std::fs::File::open(dir.join("part-00000.parquet")).map_err(storage)?;
    f.sync_all().map_err(storage)?;
    Ok(total)
}

/// What the upload's reader hands the parser: a chunk, the reason it broke, or (`None`) its
/// end. A channel that closes without the end is an upload that broke off (the request was
/// dropped), never a short file.
pub type Piece = Option<Result<bytes::Bytes, String>>;

/// A `Read` over the pieces of an upload arriving on a channel (the blocking parser's side).
pub struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<Piece>,
    buf: bytes::Bytes,
    ended: bool,
}

impl ChannelReader {
    /// Reads what `rx` delivers, up to its end.
    pub fn new(rx: tokio::sync::mpsc::Receiver<Piece>) -> Self {
        ChannelReader {
            rx,
            buf: bytes::Bytes::new(),
            ended: false,
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.buf.is_empty() {
            if self.ended {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Some(Ok(b))) => self.buf = b,
                Some(Some(Err(e))) => return Err(std::io::Error::other(e)),
                Some(None) => self.ended = true,
                None => return Err(std::io::Error::other("the upload broke off")),
            }
        }
        let n = out.len().min(self.buf.len());
        out[..n].copy_from_slice(&self.buf.split_to(n));
        Ok(n)
    }
}
