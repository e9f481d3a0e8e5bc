//! An expert's adapter as tensors on a device: every tensor section of a
//! binary file (zero-copy views → one copy into candle), or the adapter of a
//! legacy tar.gz package through `ExpertLoader`.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use super::device_tensors::{load_section, raw_to_tensor, tensor_nbytes, view_to_tensor};
use super::error::{Result, RuntimeError};
use super::osd_runtime::{osd_modules, OsdResident};
use crate::format::layout::SectionType;
use crate::format::loader::{ExpertLoader, SourceFormat};
use crate::format::package::{ExpertContents, ADAPTER_WEIGHTS};
use crate::format::peft::PeftType;
use crate::format::tensor_index::{IndexedSection, TensorIndex};
use crate::format::tensors::ModuleInfo;
use crate::format::{ExpertReader, SectionInfo};
use rayon::prelude::*;

/// Weight bytes from which a load copies sections on all cores (measured:
/// a 1.5 MB expert loads in 0.30 ms on the pool, faster alone; a 26 MB one
/// gains a third on two cores).
const PARALLEL_LOAD_BYTES: u64 = 8 << 20;

/// Name of the soft prompt tensor (PEFT prompt tuning).
pub const SOFT_PROMPT: &str = "prompt_embeddings";

/// How to bring an expert's tensors onto a device.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Where the tensors go.
    pub device: Device,
    /// Convert every float tensor to this dtype (None: keep the stored one).
    pub dtype: Option<DType>,
    /// Check each section's SHA-256 before its bytes are used.
    pub verify: bool,
    /// Trust policy checked before any tensor is handed out (`None`:
    /// nothing required). A refused expert never reaches the runtime.
    pub trust: Option<std::sync::Arc<crate::format::signing::Policy>>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            dtype: None,
            verify: true,
            trust: None,
        }
    }
}

impl LoadOptions {
    /// Default options on `device`.
    pub fn on(device: Device) -> Self {
        Self {
            device,
            ..Self::default()
        }
    }
}

/// An adapter's tensors on a device, with the module table that says how to
/// apply them.
#[derive(Debug, Clone)]
pub struct AdapterWeights {
    pub modules: Vec<ModuleInfo>,
    /// Adapter tensors by their PEFT key.
    pub tensors: HashMap<String, Tensor>,
    /// OSD modules by module name, kept as their stored bytes (decoded when
    /// fused: see `osd_runtime`).
    pub osd: HashMap<String, OsdResident>,
    /// Prompt tuning: `prompt_embeddings` [virtual tokens, dim].
    pub soft_prompt: Option<Tensor>,
    pub device: Device,
    pub format: SourceFormat,
    /// Notices for the user (deprecated format, fallback).
    pub warnings: Vec<String>,
}

impl AdapterWeights {
    /// Opens `path` (binary or legacy, by content) and loads every adapter
    /// tensor. A binary file that fails to open falls back to a legacy
    /// package beside it, as `ExpertLoader` does.
    pub fn open(path: &Path, options: &LoadOptions) -> Result<Self> {
        if let Some(url) = crate::format::remote::url_of(path) {
            let plan = crate::format::remote::Plan::Weights;
            let (reader, _) = crate::format::remote::open_reader(
                &url,
                &plan,
                Default::default(),
                &mut |_, _| {},
            )?;
            return Self::from_reader(&reader, options);
        }
        // The binary reader checks the magic itself: try it first.
        if let Ok(reader) = ExpertReader::open(path) {
            return Self::from_reader(&reader, options);
        }
        let loaded = ExpertLoader::open(path)?;
        if loaded.reader.is_none()
            && options
                .trust
                .as_ref()
                .is_some_and(|p| p.requires_signature())
        {
            return Err(RuntimeError::Untrusted(format!(
                "{}: a legacy tar.gz package carries no signature",
                loaded.path.display()
            )));
        }
        let mut weights = match &loaded.reader {
            Some(reader) => Self::from_reader(reader, options)?,
            None => Self::from_contents(&loaded.contents, options)?,
        };
        weights.format = loaded.format;
        weights.warnings = loaded.warnings;
        Ok(weights)
    }

    /// Every adapter tensor section of an open binary file.
    pub fn from_reader(reader: &ExpertReader, options: &LoadOptions) -> Result<Self> {
        if let Some(policy) = &options.trust {
            crate::format::signing::admit(reader, policy)
                .map_err(|e| RuntimeError::Untrusted(e.to_string()))?;
        }
        if options.verify {
            check_weight_sections(reader)?;
        }
        let index_bytes = match reader.first(SectionType::TensorIndex) {
            Some(info) => Some(reader.section(info.index)?),
            None => None,
        };
        let index = match &index_bytes {
            Some(bytes) => TensorIndex::parse(bytes)?,
            None => None,
        };
        let mut indexed: HashMap<usize, IndexedSection<'_>> = HashMap::new();
        for section in index.iter().flat_map(|i| i.sections()) {
            let info = reader.find(section.kind, section.name).ok_or_else(|| {
                RuntimeError::Invalid(format!(
                    "the tensor index lists section {:?}, which the file does not have",
                    crate::diagnostics::printable(section.name)
                ))
            })?;
            indexed.insert(info.index, section);
        }
        reader.will_read(
            reader
                .sections()
                .iter()
                .filter(|s| s.kind.is_weights())
                .map(|s| s.index),
        );
        // Sections are independent: decoded and copied on all cores when
        // there is enough to copy (below that, waking the pool costs more
        // than it saves), then gathered in file order (module order).
        let load = |info: &SectionInfo| match (&index, indexed.get(&info.index)) {
            (Some(index), Some(section)) => load_indexed(reader, info, index, section, options),
            _ => load_unindexed(reader, info, options),
        };
        let weight_bytes: u64 = reader
            .sections()
            .iter()
            .filter(|s| s.kind.is_weights())
            .map(|s| s.raw_len)
            .sum();
        let loaded: Vec<SectionLoad> = if weight_bytes >= PARALLEL_LOAD_BYTES {
            reader
                .sections()
                .par_iter()
                .map(load)
                .collect::<Result<_>>()?
        } else {
            reader.sections().iter().map(load).collect::<Result<_>>()?
        };
        let mut modules = Vec::new();
        let mut tensors = HashMap::new();
        let mut osd = HashMap::new();
        let mut soft_prompt = None;
        for section in loaded {
            for (module, resident) in section.osd {
                osd.insert(module.module.clone(), resident);
                modules.push(module);
            }
            modules.extend(section.modules);
            for (name, tensor) in section.tensors {
                if section.soft_prompt && soft_prompt.is_none() {
                    soft_prompt = Some(tensor.clone());
                }
                tensors.insert(name, tensor);
            }
        }
        Ok(Self {
            modules,
            tensors,
            osd,
            soft_prompt,
            device: options.device.clone(),
            format: SourceFormat::Binary,
            warnings: Vec::new(),
        })
    }

    /// The adapter of contents already in memory (legacy packages).
    pub fn from_contents(contents: &ExpertContents, options: &LoadOptions) -> Result<Self> {
        let adapter = contents
            .adapter
            .as_ref()
            .ok_or_else(|| RuntimeError::Invalid("the expert holds no adapter".into()))?;
        let mut tensors = HashMap::new();
        let mut soft_prompt = None;
        for i in 0..adapter.tensors.len() {
            let t = adapter
                .tensor(i)
                .map_err(|e| RuntimeError::Package(e.into()))?;
            let tensor = raw_to_tensor(&t.data, t.dtype, &t.shape, &options.device, options.dtype)?;
            if adapter.peft_type == PeftType::PromptTuning && t.name.ends_with(SOFT_PROMPT) {
                soft_prompt = Some(tensor.clone());
            }
            tensors.insert(t.name, tensor);
        }
        Ok(Self {
            modules: adapter.modules.clone(),
            tensors,
            osd: HashMap::new(),
            soft_prompt,
            device: options.device.clone(),
            format: SourceFormat::LegacyTarGz,
            warnings: Vec::new(),
        })
    }

    /// An adapter tensor by role (`A`, `B`, `magnitude`, `ia3`, ...).
    pub fn role(&self, module: &ModuleInfo, role: &str) -> Result<&Tensor> {
        let name = module
            .tensors
            .get(role)
            .ok_or_else(|| RuntimeError::module(&module.module, format!("no {role} tensor")))?;
        self.tensors
            .get(name)
            .ok_or_else(|| RuntimeError::module(&module.module, format!("tensor {name} missing")))
    }

    /// Bytes of all tensors on the device, and of the OSD modules as stored.
    pub fn bytes(&self) -> usize {
        self.tensors.values().map(tensor_nbytes).sum::<usize>()
            + self.osd.values().map(|m| m.payload.len()).sum::<usize>()
    }

    /// An OSD module's stored form.
    pub fn osd_module(&self, module: &ModuleInfo) -> Result<&OsdResident> {
        self.osd
            .get(&module.module)
            .ok_or_else(|| RuntimeError::module(&module.module, "OSD payload missing"))
    }

    /// The soft prompt as a tensor [virtual tokens, dim], if the expert has one.
    pub fn soft_prompt(&self) -> Option<&Tensor> {
        self.soft_prompt.as_ref()
    }

    /// Moves every tensor to another device.
    pub fn to_device(&self, device: &Device) -> Result<Self> {
        let tensors = self
            .tensors
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.to_device(device)?)))
            .collect::<Result<HashMap<_, _>>>()?;
        let soft_prompt = match &self.soft_prompt {
            Some(t) => Some(t.to_device(device)?),
            None => None,
        };
        Ok(Self {
            modules: self.modules.clone(),
            tensors,
            osd: self.osd.clone(),
            soft_prompt,
            device: device.clone(),
            format: self.format,
            warnings: self.warnings.clone(),
        })
    }
}

/// What one section adds to an adapter.
#[derive(Default)]
struct SectionLoad {
    tensors: Vec<(String, Tensor)>,
    modules: Vec<ModuleInfo>,
    osd: Vec<(ModuleInfo, OsdResident)>,
    /// The tensors are a soft prompt.
    soft_prompt: bool,
}

/// A section the tensor index describes (2.1): views from the binary
/// records, no JSON parsed.
fn load_indexed(
    reader: &ExpertReader,
    info: &SectionInfo,
    index: &TensorIndex<'_>,
    section: &IndexedSection<'_>,
    options: &LoadOptions,
) -> Result<SectionLoad> {
    let weights = matches!(info.kind, SectionType::Tensors | SectionType::SoftPrompt);
    if !weights || section.source != Some(ADAPTER_WEIGHTS) {
        return Ok(SectionLoad::default()); // not adapter weights
    }
    let bytes = reader.section(info.index)?;
    let tensors = index
        .views(section, &bytes)?
        .into_iter()
        .map(|(name, view)| {
            let tensor = view_to_tensor(&view, &options.device, options.dtype)?;
            Ok((name.to_string(), tensor))
        })
        .collect::<Result<_>>()?;
    Ok(SectionLoad {
        tensors,
        modules: index.modules(section),
        osd: Vec::new(),
        soft_prompt: info.kind == SectionType::SoftPrompt,
    })
}

/// A section read through its own header: OSD sections, and tensor
/// sections of files without an index (2.0).
fn load_unindexed(
    reader: &ExpertReader,
    info: &SectionInfo,
    options: &LoadOptions,
) -> Result<SectionLoad> {
    if info.kind == SectionType::Osd {
        let bytes = reader.section(info.index)?;
        return Ok(SectionLoad {
            osd: osd_modules(&bytes, info.layer)?,
            ..SectionLoad::default()
        });
    }
    if !matches!(info.kind, SectionType::Tensors | SectionType::SoftPrompt) {
        return Ok(SectionLoad::default());
    }
    let section = load_section(
        reader,
        info.index,
        &options.device,
        options.dtype,
        false, // checked by the caller, all at once
    )?;
    if section.table.source.as_deref() != Some(ADAPTER_WEIGHTS) {
        return Ok(SectionLoad::default()); // OSD or other payloads: not adapter weights
    }
    Ok(SectionLoad {
        tensors: section.tensors,
        modules: section.table.modules,
        osd: Vec::new(),
        soft_prompt: info.kind == SectionType::SoftPrompt,
    })
}

/// Hashes every section the weights come from (tensors, soft prompts, OSD)
/// against the TOC, on all cores at once: a checked load costs what
/// `verify` costs, not one SHA-256 stream section by section. The first
/// damaged section in file order is the error.
fn check_weight_sections(reader: &ExpertReader) -> Result<()> {
    use rayon::prelude::*;
    let wanted: Vec<usize> = reader
        .sections()
        .iter()
        // The tensor index too: it says where the tensors are.
        .filter(|s| s.kind.is_weights() || s.kind == SectionType::TensorIndex)
        .map(|s| s.index)
        .collect();
    let results: Vec<std::result::Result<(), crate::format::FormatError>> = wanted
        .par_iter()
        .map(|&index| reader.check_section(index))
        .collect();
    match results.into_iter().find_map(std::result::Result::err) {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
