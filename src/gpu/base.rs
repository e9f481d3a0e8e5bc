//! Base model weights as they ship: one safetensors file, several, or a
//! folder with a sharded checkpoint (`model.safetensors.index.json`), all
//! memory-mapped. Names from an adapter's module table are matched exactly,
//! then by suffix (`bert.encoder...` / `model.layers...` prefixes), and
//! merged weights are streamed to one safetensors file.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use memmap2::Mmap;
use safetensors::tensor::{Metadata, TensorInfo, TensorView};
use safetensors::{Dtype, SafeTensors};

use super::device_tensors::view_to_tensor;
use super::error::{Result, RuntimeError};
use crate::format::atomic::AtomicFile;

/// Sharded checkpoints name their shards in this file.
pub const SHARD_INDEX: &str = "model.safetensors.index.json";

/// How a wanted name was found among the available ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Found under the same name.
    Exact(String),
    /// The available name differs by a dotted prefix on one side.
    Suffix(String),
    /// Several names match by suffix: none is picked.
    Ambiguous(Vec<String>),
    /// Not found.
    Missing,
}

impl Resolved {
    /// The name found, if exactly one.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Exact(n) | Self::Suffix(n) => Some(n),
            _ => None,
        }
    }
}

/// Exact-then-suffix lookup of tensor names (`a.b.c` matches `x.a.b.c`, and
/// `x.a.b.c` matches `a.b.c`, at dot boundaries only).
#[derive(Debug, Clone, Default)]
pub struct NameIndex {
    names: std::collections::HashSet<String>,
    /// Every dotted suffix of every name → the names that end with it.
    suffixes: HashMap<String, Vec<String>>,
}

impl NameIndex {
    /// Indexes the available names.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut index = Self::default();
        for name in names {
            index.names.insert(name.to_string());
            let mut rest = name;
            while let Some(pos) = rest.find('.') {
                rest = &rest[pos + 1..];
                index
                    .suffixes
                    .entry(rest.to_string())
                    .or_default()
                    .push(name.to_string());
            }
        }
        index
    }

    /// Finds `wanted`: exact name first, then by dotted prefix on either side.
    pub fn resolve(&self, wanted: &str) -> Resolved {
        if self.names.contains(wanted) {
            return Resolved::Exact(wanted.to_string());
        }
        // The available name carries an extra prefix.
        if let Some(hits) = self.suffixes.get(wanted) {
            return match hits.as_slice() {
                [one] => Resolved::Suffix(one.clone()),
                many => Resolved::Ambiguous(many.to_vec()),
            };
        }
        // The wanted name carries an extra prefix.
        let mut rest = wanted;
        while let Some(pos) = rest.find('.') {
            rest = &rest[pos + 1..];
            if rest.contains('.') && self.names.contains(rest) {
                return Resolved::Suffix(rest.to_string());
            }
        }
        Resolved::Missing
    }
}

struct Entry {
    file: usize,
    dtype: Dtype,
    shape: Vec<usize>,
    /// Absolute byte range in the file.
    start: usize,
    end: usize,
}

/// Memory-mapped base checkpoint, one or more safetensors files.
pub struct BaseCheckpoint {
    files: Vec<(PathBuf, Mmap)>,
    entries: HashMap<String, Entry>,
    /// Tensor names in file order (file by file, by offset).
    order: Vec<String>,
    index: NameIndex,
    /// The first file's `__metadata__` (e.g. `{"format": "pt"}`).
    pub metadata: HashMap<String, String>,
}

impl BaseCheckpoint {
    /// Opens safetensors files and/or folders (a folder: its shard index when
    /// present, else every `*.safetensors` in it, sorted).
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut files = Vec::new();
        for path in paths {
            if path.is_dir() {
                files.extend(shards_of(path)?);
            } else {
                files.push(path.clone());
            }
        }
        if files.is_empty() {
            return Err(RuntimeError::Base("no safetensors files given".into()));
        }
        let mut base = Self {
            files: Vec::new(),
            entries: HashMap::new(),
            order: Vec::new(),
            index: NameIndex::default(),
            metadata: HashMap::new(),
        };
        for path in files {
            base.add_file(path)?;
        }
        base.index = NameIndex::new(base.order.iter().map(String::as_str));
        Ok(base)
    }

    fn add_file(&mut self, path: PathBuf) -> Result<()> {
        let file = std::fs::File::open(&path).map_err(|e| RuntimeError::io(&path, e))?;
        // SAFETY: read-only map; a checkpoint rewritten in place while we run
        // could fault, as with any mmap-based safetensors loader.
        let map = unsafe { Mmap::map(&file) }.map_err(|e| RuntimeError::io(&path, e))?;
        let bad = |e: safetensors::SafeTensorError| {
            RuntimeError::Base(format!("{}: {e}", path.display()))
        };
        let (header_len, meta) = SafeTensors::read_metadata(&map).map_err(bad)?;
        let data_start = 8 + header_len;
        let file_index = self.files.len();
        if file_index == 0 {
            self.metadata = meta.metadata().clone().unwrap_or_default();
        }
        let mut names: Vec<(String, Entry)> = meta
            .tensors()
            .into_iter()
            .map(|(name, info)| {
                let entry = Entry {
                    file: file_index,
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start: data_start + info.data_offsets.0,
                    end: data_start + info.data_offsets.1,
                };
                (name, entry)
            })
            .collect();
        names.sort_by_key(|(_, e)| e.start);
        for (name, entry) in names {
            if self.entries.contains_key(&name) {
                return Err(RuntimeError::Base(format!(
                    "tensor {name} appears in more than one file ({})",
                    path.display()
                )));
            }
            self.order.push(name.clone());
            self.entries.insert(name, entry);
        }
        self.files.push((path, map));
        Ok(())
    }

    /// Tensor names in file order.
    pub fn names(&self) -> &[String] {
        &self.order
    }

    /// The safetensors files of the checkpoint.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.iter().map(|(p, _)| p.as_path())
    }

    /// Finds a tensor name among the checkpoint's (see [`NameIndex::resolve`]).
    pub fn resolve(&self, wanted: &str) -> Resolved {
        self.index.resolve(wanted)
    }

    /// A zero-copy view of a tensor's bytes.
    pub fn view(&self, name: &str) -> Option<TensorView<'_>> {
        let e = self.entries.get(name)?;
        let data = self.files.get(e.file)?.1.get(e.start..e.end)?;
        TensorView::new(e.dtype, e.shape.clone(), data).ok()
    }

    /// A tensor on `device`, optionally converted.
    pub fn tensor(&self, name: &str, device: &Device, want: Option<DType>) -> Result<Tensor> {
        let view = self
            .view(name)
            .ok_or_else(|| RuntimeError::Base(format!("no tensor {name}")))?;
        view_to_tensor(&view, device, want)
    }

    /// Total bytes of tensor data.
    pub fn data_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|e| (e.end - e.start) as u64)
            .sum()
    }

    /// Writes every base tensor to `out` (atomically), replacing those
    /// `replace` produces: `replace(name)` is asked once per tensor, in the
    /// output's data order, and returns merged bytes (same dtype and shape).
    pub fn write_with(
        &self,
        out: &Path,
        replace: &mut dyn FnMut(&str) -> Result<Option<Vec<u8>>>,
    ) -> Result<u64> {
        // safetensors' own order: descending dtype alignment, then name.
        let mut names: Vec<&String> = self.order.iter().collect();
        names.sort_by(|a, b| {
            let (ea, eb) = (&self.entries[*a], &self.entries[*b]);
            eb.dtype.cmp(&ea.dtype).then(a.cmp(b))
        });
        let mut offset = 0usize;
        let infos = names
            .iter()
            .map(|name| {
                let e = &self.entries[*name];
                let n = e.end - e.start;
                let info = TensorInfo {
                    dtype: e.dtype,
                    shape: e.shape.clone(),
                    data_offsets: (offset, offset + n),
                };
                offset += n;
                ((*name).clone(), info)
            })
            .collect();
        let metadata = (!self.metadata.is_empty()).then(|| self.metadata.clone());
        let header = Metadata::new(metadata, infos)
            .map_err(|e| RuntimeError::Base(format!("output header: {e}")))?;
        let mut header = serde_json::to_vec(&header)
            .map_err(|e| RuntimeError::Base(format!("output header: {e}")))?;
        header.resize(header.len().next_multiple_of(8), b' ');
        let mut file = AtomicFile::create(out)?;
        let io = |e| RuntimeError::io(out, e);
        {
            let mut w = BufWriter::with_capacity(1 << 20, &mut file);
            w.write_all(&(header.len() as u64).to_le_bytes())
                .map_err(io)?;
            w.write_all(&header).map_err(io)?;
            for name in names {
                let e = &self.entries[name];
                match replace(name)? {
                    Some(bytes) => {
                        if bytes.len() != e.end - e.start {
                            return Err(RuntimeError::Base(format!(
                                "merged {name} has {} bytes, the base {}",
                                bytes.len(),
                                e.end - e.start
                            )));
                        }
                        w.write_all(&bytes).map_err(io)?;
                    }
                    None => {
                        let data = &self.files[e.file].1[e.start..e.end];
                        w.write_all(data).map_err(io)?;
                    }
                }
            }
            w.flush().map_err(io)?;
        }
        file.commit()?;
        Ok((8 + header.len() + offset) as u64)
    }
}

/// The shard files of a checkpoint folder.
fn shards_of(dir: &Path) -> Result<Vec<PathBuf>> {
    let index_path = dir.join(SHARD_INDEX);
    if index_path.is_file() {
        let text = std::fs::read(&index_path).map_err(|e| RuntimeError::io(&index_path, e))?;
        let json: serde_json::Value = serde_json::from_slice(&text)
            .map_err(|e| RuntimeError::Base(format!("{}: {e}", index_path.display())))?;
        let map = json
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| {
                RuntimeError::Base(format!("{}: no weight_map", index_path.display()))
            })?;
        let mut shards: BTreeMap<String, ()> = BTreeMap::new();
        for file in map.values() {
            let file = file.as_str().ok_or_else(|| {
                RuntimeError::Base(format!(
                    "{}: shard names must be strings",
                    index_path.display()
                ))
            })?;
            if file.contains('/') || file.contains('\\') || file.starts_with('.') {
                return Err(RuntimeError::Base(format!(
                    "{}: shard {file:?} must be a plain file name",
                    index_path.display()
                )));
            }
            shards.insert(file.to_string(), ());
        }
        return Ok(shards.into_keys().map(|f| dir.join(f)).collect());
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| RuntimeError::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors") && p.is_file())
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(RuntimeError::Base(format!(
            "{}: no {SHARD_INDEX} and no .safetensors files",
            dir.display()
        )));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_resolve_exactly_then_by_suffix() {
        let index = NameIndex::new([
            "bert.encoder.layer.0.attention.self.query.weight",
            "bert.encoder.layer.0.attention.self.key.weight",
            "a.x.weight",
            "b.x.weight",
            "pooler.dense.weight",
        ]);
        assert_eq!(
            index.resolve("encoder.layer.0.attention.self.query.weight"),
            Resolved::Suffix("bert.encoder.layer.0.attention.self.query.weight".into())
        );
        assert_eq!(
            index.resolve("pooler.dense.weight"),
            Resolved::Exact("pooler.dense.weight".into())
        );
        assert_eq!(
            index.resolve("model.pooler.dense.weight"),
            Resolved::Suffix("pooler.dense.weight".into())
        );
        assert!(matches!(index.resolve("x.weight"), Resolved::Ambiguous(v) if v.len() == 2));
        assert_eq!(index.resolve("query.weight2"), Resolved::Missing);
        // Suffixes only at dot boundaries.
        assert_eq!(index.resolve("ery.weight"), Resolved::Missing);
    }
}
