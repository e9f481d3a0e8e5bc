//! Layer-by-layer streaming and an LRU cache of decoded layers.
//!
//! [`LayerStream`] walks an expert's tensor sections layer by layer (layers
//! ascending, then the sections of no layer: embeddings, pooler, soft
//! prompt; the [`LayerCache`] fetches any of them by index) and decodes one section per `next()`: layer i is usable before
//! a byte of layer i+1 is read (uncompressed sections are only touched
//! through the memory map when they are decoded).

use std::collections::VecDeque;
use std::sync::Arc;

use super::adapter::LoadOptions;
use super::device_tensors::{load_section, SectionTensors};
use super::error::Result;
use crate::format::ExpertReader;

/// Section indices of the tensor sections in streaming order.
pub fn stream_order(reader: &ExpertReader) -> Vec<usize> {
    let mut order: Vec<(i64, usize)> = reader
        .sections()
        .iter()
        .filter(|s| s.kind.is_weights())
        .map(|s| (s.layer.map_or(i64::MAX, i64::from), s.index))
        .collect();
    order.sort();
    order.into_iter().map(|(_, i)| i).collect()
}

/// Lazy iterator over an expert's layers.
pub struct LayerStream<'r> {
    reader: &'r ExpertReader,
    order: Vec<usize>,
    next: usize,
    options: LoadOptions,
}

impl<'r> LayerStream<'r> {
    /// Streams the tensor sections of `reader`, one layer at a time.
    pub fn new(reader: &'r ExpertReader, options: LoadOptions) -> Self {
        Self {
            order: stream_order(reader),
            reader,
            next: 0,
            options,
        }
    }

    /// Sections decoded so far.
    pub fn decoded(&self) -> usize {
        self.next
    }

    /// Sections in the stream.
    pub fn total(&self) -> usize {
        self.order.len()
    }
}

impl Iterator for LayerStream<'_> {
    type Item = Result<SectionTensors>;

    fn next(&mut self) -> Option<Self::Item> {
        let index = *self.order.get(self.next)?;
        self.next += 1;
        let o = &self.options;
        Some(load_section(
            self.reader,
            index,
            &o.device,
            o.dtype,
            o.verify,
        ))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.order.len() - self.next;
        (left, Some(left))
    }
}

/// Key of a cached layer: which expert, which section.
pub type LayerKey = (u64, usize);

/// Counters of a [`LayerCache`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CacheStats {
    /// Lookups served from the cache.
    pub hits: u64,
    /// Lookups that decoded the layer.
    pub misses: u64,
    /// Layers dropped to stay within the budget.
    pub evictions: u64,
    /// Layers larger than the whole budget, handed out but not kept.
    pub uncached: u64,
}

/// LRU of decoded layers, bounded in bytes (device bytes of the tensors).
pub struct LayerCache {
    budget: usize,
    used: usize,
    /// Least recently used first.
    entries: VecDeque<(LayerKey, Arc<SectionTensors>)>,
    stats: CacheStats,
}

impl LayerCache {
    /// An empty cache holding at most `budget_bytes` of tensors.
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget: budget_bytes,
            used: 0,
            entries: VecDeque::new(),
            stats: CacheStats::default(),
        }
    }

    /// The byte budget.
    pub fn budget(&self) -> usize {
        self.budget
    }

    /// Bytes held now.
    pub fn used_bytes(&self) -> usize {
        self.used
    }

    /// Layers held now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Hits, misses, evictions and uncached layers so far.
    pub fn stats(&self) -> CacheStats {
        self.stats
    }

    /// True when the layer is held.
    pub fn contains(&self, key: LayerKey) -> bool {
        self.entries.iter().any(|(k, _)| *k == key)
    }

    /// Keys from least to most recently used.
    pub fn keys(&self) -> Vec<LayerKey> {
        self.entries.iter().map(|(k, _)| *k).collect()
    }

    /// A cached layer, marked most recently used.
    pub fn get(&mut self, key: LayerKey) -> Option<Arc<SectionTensors>> {
        let pos = self.entries.iter().position(|(k, _)| *k == key)?;
        let entry = self.entries.remove(pos)?;
        let value = entry.1.clone();
        self.entries.push_back(entry);
        Some(value)
    }

    /// Inserts a layer, evicting least recently used ones to stay within
    /// the budget. A layer larger than the budget is not kept (`false`).
    pub fn insert(&mut self, key: LayerKey, value: Arc<SectionTensors>) -> bool {
        self.remove(key);
        if value.bytes > self.budget {
            self.stats.uncached += 1;
            return false;
        }
        self.used += value.bytes;
        self.entries.push_back((key, value));
        while self.used > self.budget {
            let Some((_, old)) = self.entries.pop_front() else {
                break;
            };
            self.used -= old.bytes;
            self.stats.evictions += 1;
        }
        true
    }

    /// Drops a layer from the cache, returning it.
    pub fn remove(&mut self, key: LayerKey) -> Option<Arc<SectionTensors>> {
        let pos = self.entries.iter().position(|(k, _)| *k == key)?;
        let (_, old) = self.entries.remove(pos)?;
        self.used -= old.bytes;
        Some(old)
    }

    /// Drops every layer of one expert.
    pub fn remove_expert(&mut self, expert: u64) {
        let keys: Vec<_> = self.keys().into_iter().filter(|k| k.0 == expert).collect();
        for k in keys {
            self.remove(k);
        }
    }

    /// The cached layer, or `load()` it and cache it.
    pub fn get_or_load(
        &mut self,
        key: LayerKey,
        load: impl FnOnce() -> Result<SectionTensors>,
    ) -> Result<Arc<SectionTensors>> {
        if let Some(hit) = self.get(key) {
            self.stats.hits += 1;
            return Ok(hit);
        }
        self.stats.misses += 1;
        let value = Arc::new(load()?);
        self.insert(key, value.clone());
        Ok(value)
    }

    /// Section `index` of `reader` through the cache.
    pub fn section(
        &mut self,
        expert: u64,
        reader: &ExpertReader,
        index: usize,
        options: &LoadOptions,
    ) -> Result<Arc<SectionTensors>> {
        self.get_or_load((expert, index), || {
            load_section(
                reader,
                index,
                &options.device,
                options.dtype,
                options.verify,
            )
        })
    }
}
