//! An expert's contents independent of how it is stored, and the mapping
//! between that and the three on-disk forms: `.expert` v2, legacy tar.gz and a
//! PEFT folder.

use std::collections::HashMap;
use std::path::Path;

use safetensors::Dtype;
use serde_json::{json, Value};

use super::peft::{layer_of, PeftAdapter, PeftError, PeftType};
use super::tensor_index::{IndexBuilder, INDEX_SECTION_NAME};
use super::tensors::{encode_tensor_blob, OwnedTensor, SectionTable, TensorBlob, TensorError};
use crate::format::error::FormatError;
use crate::format::layout::{Carried, Codec, SectionType};
use crate::format::reader::ExpertReader;
use crate::format::writer::{ExpertWriter, SectionSpec, WriteSummary, WriterOptions};

/// File name of the adapter weights in PEFT folders and legacy packages.
pub const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// File name of the PEFT adapter config.
pub const ADAPTER_CONFIG: &str = "adapter_config.json";
/// File (and section) name of the manifest.
pub const MANIFEST: &str = "manifest.json";
/// File (and section) name of the router embeddings (safetensors).
pub const ROUTER_EMBEDDINGS: &str = "router_embeddings.safetensors";

/// Errors of packaging, converting and reading an expert's contents.
#[derive(Debug, thiserror::Error)]
pub enum PackageError {
    /// The container.
    #[error(transparent)]
    Format(#[from] FormatError),
    /// The PEFT adapter folder or weights.
    #[error(transparent)]
    Peft(#[from] PeftError),
    /// Tensor data or a module table.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// An operating-system error on `path`.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// A manifest that is not valid JSON or breaks the schema or rules.
    #[error("manifest: {0}")]
    Manifest(String),
    /// The expert fails the trust policy at load (unsigned, untrusted,
    /// revoked, an invalid signature): it never reaches the runtime.
    #[error("refused by the trust policy: {0}")]
    Untrusted(String),
    /// Anything else wrong with the input (not an expert, a legacy package that failed its checks, an OSD step).
    #[error("{0}")]
    Invalid(String),
}

impl PackageError {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.display().to_string(),
            source,
        }
    }
}

/// One file carried in an expert besides manifest and adapter weights.
#[derive(Debug, Clone, PartialEq)]
pub struct PackageFile {
    /// The section type it is stored as.
    pub kind: SectionType,
    /// The file name, also the section name.
    pub name: String,
    /// The file's bytes.
    pub data: Vec<u8>,
}

/// Everything an expert holds.
#[derive(Debug, Clone)]
pub struct ExpertContents {
    /// `manifest.json` bytes, kept verbatim.
    pub manifest: Vec<u8>,
    /// The adapter (config and tensors), if any.
    pub adapter: Option<PeftAdapter>,
    /// Other files, in package order.
    pub files: Vec<PackageFile>,
    /// Sections carried verbatim that no other form can hold (OSD-compressed
    /// modules, user extension sections).
    pub carried: Vec<CarriedSection>,
}

/// A section `ExpertContents` does not model but keeps.
#[derive(Debug, Clone, PartialEq)]
pub struct CarriedSection {
    /// The section type.
    pub kind: SectionType,
    /// The section name.
    pub name: String,
    /// The model layer, if any.
    pub layer: Option<u32>,
    /// The decoded bytes, written again uncompressed.
    pub data: Vec<u8>,
}

/// How tensor sections are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TensorCodec {
    /// Uncompressed: zero-copy from the memory map.
    None,
    /// zstd at the chosen level.
    Zstd,
    /// Byte planes then zstd.
    ShuffleZstd,
}

/// How `write_binary` stores an expert.
#[derive(Debug, Clone)]
pub struct PackageOptions {
    /// Codec of the tensor sections (text sections are always zstd).
    pub tensor_codec: TensorCodec,
    /// zstd level.
    pub zstd_level: i32,
    /// Convert float tensors to this dtype (`None`: keep).
    pub dtype: Option<Dtype>,
    /// Section alignment: 64 or 256.
    pub alignment: u64,
}

impl Default for PackageOptions {
    fn default() -> Self {
        Self {
            tensor_codec: TensorCodec::None,
            zstd_level: crate::format::writer::DEFAULT_ZSTD_LEVEL,
            dtype: None,
            alignment: crate::format::layout::BASE_ALIGNMENT,
        }
    }
}

/// The section type a carried file goes into, by its name.
pub fn classify_file(name: &str) -> SectionType {
    let base = name.rsplit('/').next().unwrap_or(name);
    let lower = base.to_ascii_lowercase();
    match lower.as_str() {
        MANIFEST => SectionType::Manifest,
        ADAPTER_CONFIG => SectionType::AdapterConfig,
        "readme.md" | "readme" | "readme.txt" => SectionType::Docs,
        ROUTER_EMBEDDINGS => SectionType::RouterEmbeddings,
        "tokenizer.json"
        | "tokenizer_config.json"
        | "special_tokens_map.json"
        | "vocab.json"
        | "vocab.txt"
        | "merges.txt"
        | "tokenizer.model"
        | "added_tokens.json" => SectionType::Tokenizer,
        _ if lower.starts_with("license") || lower.starts_with("licence") => SectionType::License,
        _ if lower.ends_with(".gbnf") => SectionType::Grammar,
        _ => SectionType::Blob,
    }
}

impl ExpertContents {
    /// Manifest as JSON (for derived sections and reports).
    pub fn manifest_json(&self) -> Result<Value, PackageError> {
        serde_json::from_slice(&self.manifest).map_err(|e| PackageError::Manifest(e.to_string()))
    }

    /// A minimal manifest for an adapter folder that came without one.
    pub fn synthesize_manifest(name: &str, adapter: &PeftAdapter) -> Vec<u8> {
        let c = &adapter.config;
        let kind = match adapter.peft_type {
            PeftType::Ia3 => "ia3",
            PeftType::PromptTuning => "prompt_tuning",
            PeftType::Lora if c.get("use_dora") == Some(&Value::Bool(true)) => "dora",
            PeftType::Lora => "lora",
        };
        let mut entry = json!({
            "type": kind,
            "target_modules": c.get("target_modules").cloned().unwrap_or(json!([])),
            "path": ADAPTER_WEIGHTS,
        });
        for (from, to) in [("r", "r"), ("lora_alpha", "alpha")] {
            if let Some(v) = c.get(from).filter(|v| !v.is_null()) {
                entry[to] = v.clone();
            }
        }
        if adapter.peft_type == PeftType::PromptTuning {
            entry["target_modules"] = json!(["prompt_embeddings"]);
        }
        let base = c
            .get("base_model_name_or_path")
            .and_then(Value::as_str)
            .unwrap_or("unknown");
        let manifest = json!({
            "name": name,
            "version": "0.1.0",
            "schema_version": "2.0",
            "base_models": [{ "name": base, "adapters": [entry] }],
        });
        serde_json::to_vec_pretty(&manifest).unwrap_or_default()
    }

    /// Reads an adapter folder: PEFT files plus any manifest, grammar,
    /// licence, README and tokenizer files beside them.
    pub fn from_adapter_dir(dir: &Path) -> Result<Self, PackageError> {
        let adapter = PeftAdapter::read_dir(dir)?;
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .map_err(|e| PackageError::io(dir, e))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        entries.sort();
        let mut manifest = None;
        let mut files = Vec::new();
        for name in entries {
            if name == ADAPTER_WEIGHTS || name.ends_with(".bin") || name.starts_with('.') {
                continue;
            }
            let kind = classify_file(&name);
            if kind == SectionType::Blob {
                continue; // only known kinds are picked up from a folder
            }
            let path = dir.join(&name);
            let data = std::fs::read(&path).map_err(|e| PackageError::io(&path, e))?;
            match kind {
                SectionType::Manifest => manifest = Some(data),
                SectionType::AdapterConfig => {}
                _ => files.push(PackageFile { kind, name, data }),
            }
        }
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "expert".into());
        let manifest = manifest.unwrap_or_else(|| Self::synthesize_manifest(&name, &adapter));
        let mut contents = Self {
            manifest,
            adapter: Some(adapter),
            files,
            carried: Vec::new(),
        };
        contents.add_router_embeddings(dir)?;
        Ok(contents)
    }

    /// The file the manifest's routing block names as its embeddings
    /// (`routing.embeddings`: a path, or an object with `path`), relative to
    /// `dir`: a `.safetensors` file is checked and kept, a `.npy` array is
    /// stored as safetensors. Nothing named, or already present: no change.
    /// The path may not leave `dir` (a downloaded manifest must not pull
    /// other files of the machine into a package).
    pub fn add_router_embeddings(&mut self, dir: &Path) -> Result<(), PackageError> {
        let Ok(manifest) = self.manifest_json() else {
            return Ok(());
        };
        let named = manifest
            .pointer("/routing/embeddings")
            .and_then(|v| v.as_str().or_else(|| v.get("path").and_then(Value::as_str)))
            .map(str::to_string);
        let Some(named) = named else {
            return Ok(());
        };
        let relative = Path::new(&named);
        let escapes = relative.is_absolute()
            || named.contains('\\')
            || relative
                .components()
                .any(|c| !matches!(c, std::path::Component::Normal(_)));
        if escapes {
            return Err(PackageError::Invalid(format!(
                "routing.embeddings {named:?} must be a relative path inside the adapter folder"
            )));
        }
        let path = dir.join(relative);
        let data = std::fs::read(&path).map_err(|e| PackageError::io(&path, e))?;
        let blob = if named.to_ascii_lowercase().ends_with(".npy") {
            let tensor = super::npy::read_npy(&data, "embeddings")
                .map_err(|e| PackageError::Invalid(format!("{named}: {e}")))?;
            encode_tensor_blob(&[tensor], HashMap::new())?
        } else {
            TensorBlob::parse(&data, &named)?;
            data
        };
        self.set_file(SectionType::RouterEmbeddings, ROUTER_EMBEDDINGS, blob);
        Ok(())
    }

    /// Adds or replaces a carried file.
    pub fn set_file(&mut self, kind: SectionType, name: &str, data: Vec<u8>) {
        self.files.retain(|f| f.kind != kind);
        self.files.push(PackageFile {
            kind,
            name: name.to_string(),
            data,
        });
    }

    /// Total bytes of the inputs (for the size report).
    pub fn input_bytes(&self) -> u64 {
        let adapter = self
            .adapter
            .as_ref()
            .map_or(0, |a| a.config_bytes.len() as u64 + a.tensor_bytes());
        let files: usize = self.files.iter().map(|f| f.data.len()).sum();
        self.manifest.len() as u64 + adapter + files as u64
    }

    /// The PEFT `adapter_model.safetensors` bytes, byte-identical to what
    /// PEFT wrote when no dtype conversion happened.
    pub fn adapter_weights(&self) -> Result<Option<Vec<u8>>, PackageError> {
        let Some(adapter) = &self.adapter else {
            return Ok(None);
        };
        let tensors = (0..adapter.tensors.len())
            .map(|i| adapter.tensor(i))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(encode_tensor_blob(
            &tensors,
            adapter.source_metadata.clone(),
        )?))
    }

    /// Refuses forms that cannot hold OSD-compressed modules.
    fn check_no_osd(&self, form: &str) -> Result<(), PackageError> {
        if self.carried.iter().any(|c| c.kind == SectionType::Osd) {
            return Err(PackageError::Invalid(format!(
                "this expert holds OSD-compressed modules, which {form} cannot carry: keep it as .expert v2 (or fuse it)"
            )));
        }
        Ok(())
    }

    /// Files in legacy order: manifest first, weights, config, the rest.
    pub fn to_files(&self) -> Result<Vec<(String, Vec<u8>)>, PackageError> {
        self.check_no_osd("a tar.gz package")?;
        let mut out = vec![(MANIFEST.to_string(), self.manifest.clone())];
        if let (Some(weights), Some(adapter)) = (self.adapter_weights()?, &self.adapter) {
            out.push((ADAPTER_WEIGHTS.to_string(), weights));
            out.push((ADAPTER_CONFIG.to_string(), adapter.config_bytes.clone()));
        }
        out.extend(self.files.iter().map(|f| (f.name.clone(), f.data.clone())));
        Ok(out)
    }

    /// Builds contents from (path, bytes) pairs as found in a legacy package.
    pub fn from_files(files: Vec<(String, Vec<u8>)>) -> Result<Self, PackageError> {
        let mut manifest = None;
        let mut config = None;
        let mut weights = None;
        let mut rest = Vec::new();
        for (name, data) in files {
            match name.as_str() {
                MANIFEST => manifest = Some(data),
                ADAPTER_CONFIG => config = Some(data),
                ADAPTER_WEIGHTS => weights = Some(data),
                "adapter_model.bin" => return Err(PeftError::PickleRefused(name).into()),
                _ => {
                    let kind = classify_file(&name);
                    rest.push(PackageFile { kind, name, data });
                }
            }
        }
        let manifest = manifest
            .ok_or_else(|| PackageError::Manifest("the package has no manifest.json".into()))?;
        let adapter = match (config, weights) {
            (Some(config), Some(weights)) => Some(PeftAdapter::from_bytes(config, &weights)?),
            (None, None) => None,
            _ => {
                return Err(PackageError::Invalid(
                    "adapter_config.json and adapter_model.safetensors must come together".into(),
                ))
            }
        };
        Ok(Self {
            manifest,
            adapter,
            files: rest,
            carried: Vec::new(),
        })
    }

    /// Converts every float tensor to `dtype`.
    pub fn convert_dtype(&mut self, dtype: Dtype) -> Result<(), PackageError> {
        if let Some(adapter) = &mut self.adapter {
            adapter.convert_dtype(dtype)?;
        }
        Ok(())
    }

    /// Writes a PEFT folder (`adapter_config.json` + `adapter_model.safetensors`).
    pub fn write_peft_dir(&self, dir: &Path) -> Result<(), PackageError> {
        self.check_no_osd("a PEFT folder")?;
        let adapter = self
            .adapter
            .as_ref()
            .ok_or_else(|| PackageError::Invalid("the expert holds no adapter".into()))?;
        std::fs::create_dir_all(dir).map_err(|e| PackageError::io(dir, e))?;
        let weights = self.adapter_weights()?.unwrap_or_default();
        crate::format::atomic::write_atomic(&dir.join(ADAPTER_WEIGHTS), &weights)?;
        crate::format::atomic::write_atomic(&dir.join(ADAPTER_CONFIG), &adapter.config_bytes)?;
        Ok(())
    }

    /// Writes the `.expert` v2 file. `progress(done, total)` counts raw bytes.
    pub fn write_binary(
        &self,
        out: &Path,
        options: &PackageOptions,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<WriteSummary, PackageError> {
        self.write_binary_with(out, options, progress, &[])
    }

    /// Like [`write_binary`](Self::write_binary), with extra sections (OSD
    /// sections, for example) written after the tensors.
    pub fn write_binary_with(
        &self,
        out: &Path,
        options: &PackageOptions,
        progress: &mut dyn FnMut(u64, u64),
        extra: &[(SectionSpec, Vec<u8>)],
    ) -> Result<WriteSummary, PackageError> {
        // Grammars are stored verbatim: their problems are findings
        // (`validation::check_contents`), never a refusal.
        let manifest = self.manifest_json()?;
        let writer_options = WriterOptions {
            alignment: options.alignment,
            zstd_level: options.zstd_level,
        };
        let mut writer = ExpertWriter::create(out, writer_options)?;
        let total = self.input_bytes();
        let mut done = 0u64;
        // Every tensor section written is summarised in the tensor index,
        // written last (it needs every section's layout).
        let mut index = IndexBuilder::default();
        let mut add = |writer: &mut ExpertWriter, spec: SectionSpec, data: &[u8]| {
            if matches!(spec.kind, SectionType::Tensors | SectionType::SoftPrompt) {
                index.add(spec.kind, &spec.name, data);
            }
            writer.add_section(spec, data)?;
            done += data.len() as u64;
            progress(done, total);
            Ok::<(), PackageError>(())
        };
        let text = |kind, name: &str| SectionSpec::new(kind, name).codec(Codec::Zstd);
        add(
            &mut writer,
            text(SectionType::Manifest, MANIFEST),
            &self.manifest,
        )?;
        if let Some(adapter) = &self.adapter {
            add(
                &mut writer,
                text(SectionType::AdapterConfig, ADAPTER_CONFIG),
                &adapter.config_bytes,
            )?;
        }
        for file in &self.files {
            // Opaque blobs and tensors stay uncompressed (zero-copy reads).
            let codec = match file.kind {
                SectionType::Blob | SectionType::RouterEmbeddings => Codec::None,
                _ => Codec::Zstd,
            };
            add(
                &mut writer,
                SectionSpec::new(file.kind, &file.name).codec(codec),
                &file.data,
            )?;
        }
        for (kind, name, value) in derived_sections(&manifest) {
            add(&mut writer, text(kind, name), &value)?;
        }
        if let Some(adapter) = &self.adapter {
            for_each_tensor_section(adapter, options, &mut |spec, blob| {
                add(&mut writer, spec, blob)
            })?;
        }
        for section in &self.carried {
            let mut spec = SectionSpec::new(section.kind, &section.name).codec(Codec::None);
            if let Some(layer) = section.layer {
                spec = spec.layer(layer);
            }
            add(&mut writer, spec, &section.data)?;
        }
        for (spec, bytes) in extra {
            add(&mut writer, spec.clone(), bytes)?;
        }
        if let Some(bytes) = index.finish() {
            let spec = SectionSpec::new(SectionType::TensorIndex, INDEX_SECTION_NAME);
            writer.add_section(spec, &bytes)?;
        }
        Ok(writer.finish()?)
    }

    /// Reassembles the contents of a `.expert` v2 file.
    pub fn read_binary(reader: &ExpertReader) -> Result<Self, PackageError> {
        let mut manifest = None;
        let mut config = None;
        let mut carried = Vec::new();
        let mut files = Vec::new();
        let mut tensors = Vec::new();
        let mut modules = Vec::new();
        let mut source_metadata = HashMap::new();
        for info in reader.sections() {
            let bytes = || reader.section(info.index);
            match info.kind.carried() {
                Carried::Manifest => manifest = Some(bytes()?.to_vec()),
                Carried::AdapterConfig => config = Some(bytes()?.to_vec()),
                Carried::AdapterTensors => {
                    let data = bytes()?;
                    let blob = TensorBlob::parse(&data, &info.name)?;
                    let table = blob.table(&info.name)?;
                    if table.source.as_deref() != Some(ADAPTER_WEIGHTS) {
                        continue;
                    }
                    modules.extend(table.modules);
                    source_metadata = table.source_metadata.into_iter().collect();
                    for (name, view) in blob.tensors.iter() {
                        tensors.push(OwnedTensor::from_view(name, view));
                    }
                }
                Carried::File => files.push(PackageFile {
                    kind: info.kind,
                    name: info.name.clone(),
                    data: bytes()?.to_vec(),
                }),
                Carried::Verbatim => carried.push(CarriedSection {
                    kind: info.kind,
                    name: info.name.clone(),
                    layer: info.layer,
                    data: bytes()?.to_vec(),
                }),
                // Made again from the manifest, replaced by a new signature,
                // or not understood: not part of the contents.
                Carried::Derived | Carried::Replaced | Carried::Skipped => {}
            }
        }
        let manifest = manifest
            .ok_or_else(|| PackageError::Manifest("the file has no manifest section".into()))?;
        let adapter = match config {
            None => None,
            Some(config_bytes) => Some(PeftAdapter::from_parts(
                config_bytes,
                tensors,
                source_metadata,
                modules,
            )?),
        };
        Ok(Self {
            manifest,
            adapter,
            files,
            carried,
        })
    }
}

/// Routing keywords and metrics pulled out of the manifest into their own
/// sections, so a router or a dashboard reads them without the whole manifest.
fn derived_sections(manifest: &Value) -> Vec<(SectionType, &'static str, Vec<u8>)> {
    let mut out = Vec::new();
    if let Some(routing) = manifest.get("routing") {
        out.push((
            SectionType::RouterKeywords,
            "routing",
            serde_json::to_vec(routing).unwrap_or_default(),
        ));
    }
    let metrics: serde_json::Map<String, Value> = ["evaluation", "quality_metrics"]
        .iter()
        .filter_map(|k| manifest.get(*k).map(|v| (k.to_string(), v.clone())))
        .collect();
    if !metrics.is_empty() {
        out.push((
            SectionType::Metrics,
            "metrics",
            serde_json::to_vec(&metrics).unwrap_or_default(),
        ));
    }
    out
}

fn codec_for(choice: TensorCodec, dtype: Dtype) -> Codec {
    match choice {
        TensorCodec::None => Codec::None,
        TensorCodec::Zstd => Codec::Zstd,
        // Shuffling needs multi-byte elements; 1-byte dtypes get plain zstd.
        TensorCodec::ShuffleZstd => match dtype.bitsize() {
            16 => Codec::ShuffleZstd { element_size: 2 },
            32 => Codec::ShuffleZstd { element_size: 4 },
            64 => Codec::ShuffleZstd { element_size: 8 },
            _ => Codec::Zstd,
        },
    }
}

/// Receives finished sections one at a time.
type SectionSink<'a> = dyn FnMut(SectionSpec, &[u8]) -> Result<(), PackageError> + 'a;

/// One safetensors blob per layer (plus one for non-layer tensors), each
/// carrying the module table of its modules. Blobs are built and handed to
/// `emit` one at a time, so only one section's tensors are ever in memory.
fn for_each_tensor_section(
    adapter: &PeftAdapter,
    options: &PackageOptions,
    emit: &mut SectionSink<'_>,
) -> Result<(), PackageError> {
    let mut groups: std::collections::BTreeMap<Option<u32>, Vec<usize>> = Default::default();
    for (i, tensor) in adapter.tensors.iter().enumerate() {
        groups.entry(layer_of(&tensor.name)).or_default().push(i);
    }
    let source_meta: std::collections::BTreeMap<String, String> = adapter
        .source_metadata
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    for (layer, members) in groups {
        let tensors = members
            .iter()
            .map(|&i| {
                let tensor = adapter.tensor(i)?;
                Ok(match options.dtype {
                    Some(dtype) => tensor.convert(dtype)?,
                    None => tensor,
                })
            })
            .collect::<Result<Vec<_>, PackageError>>()?;
        let table = SectionTable {
            modules: adapter
                .modules
                .iter()
                .filter(|m| m.layer == layer)
                .cloned()
                .collect(),
            source: Some(ADAPTER_WEIGHTS.to_string()),
            source_metadata: source_meta.clone(),
        };
        let metadata = table.to_metadata();
        let dtype = tensors.first().map_or(Dtype::F32, |t| t.dtype);
        let blob = encode_tensor_blob(&tensors, metadata)?;
        drop(tensors);
        let codec = codec_for(options.tensor_codec, dtype);
        let spec = match (layer, adapter.peft_type == PeftType::PromptTuning) {
            (_, true) => SectionSpec::new(SectionType::SoftPrompt, "prompt_embeddings"),
            (Some(l), false) => {
                SectionSpec::new(SectionType::Tensors, format!("layer.{l}")).layer(l)
            }
            (None, false) => SectionSpec::new(SectionType::Tensors, "global"),
        };
        emit(spec.codec(codec), &blob)?;
    }
    Ok(())
}
