//! The size/error frontier over method × dtype × rank (× relaxation), and
//! the pick under a byte limit: the point with the smallest measured error
//! whose bytes fit. The plain baselines (the adapter cast to bf16/f16,
//! TruncSVD in each dtype) are always candidates, so the pick never loses to
//! them at equal bytes.

use rayon::prelude::*;

use super::analysis::{Estimate, Method, OsdParams};
use super::error::OsdError;
use super::expert::{exact_outcome, AdapterAnalysis};
use super::precision::ValueDtype;

/// One point of a tuning grid.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GridPoint {
    pub method: Method,
    pub dtype: ValueDtype,
    /// Rank r (the budget's TruncSVD rank for osd/magtrunc).
    pub rank: usize,
    /// Largest relaxed rank k = r + c chosen.
    pub relaxed_rank: usize,
    /// Bytes of the compressed modules as written.
    pub bytes: u64,
    /// The paper's bit count, for comparison.
    pub paper_bits: u64,
    /// Input bytes of the same modules over `bytes`.
    pub ratio: f64,
    /// Relative Frobenius error.
    pub rel_error: f64,
    /// `rel_error` was measured on the built modules, not predicted.
    pub exact: bool,
    /// No other point is both no larger and more accurate, and it is
    /// smaller than the input.
    pub pareto: bool,
}

/// The params of a grid point (blends use `template`'s sparsity and α).
pub fn point_params(
    method: Method,
    dtype: ValueDtype,
    rank: usize,
    template: &OsdParams,
) -> OsdParams {
    OsdParams {
        method,
        dtype,
        rank,
        relax: template.relax,
        sparsity: template.sparsity,
        alpha: template.alpha,
        budget_rank: None,
        budget_bytes: None,
    }
}

/// Every method × dtype × rank point; `exact` builds each point's modules
/// and measures them (otherwise errors are predicted from the caches).
/// `lora` appears once per dtype (its rank is the adapter's).
pub fn grid(
    analysis: &AdapterAnalysis,
    methods: &[Method],
    dtypes: &[ValueDtype],
    ranks: &[usize],
    template: &OsdParams,
    exact: bool,
) -> Result<Vec<GridPoint>, OsdError> {
    let original = analysis.original_bytes();
    let mut params = Vec::new();
    for &method in methods {
        for &dtype in dtypes {
            if method == Method::Lora {
                params.push(point_params(method, dtype, 0, template));
                continue;
            }
            for &rank in ranks {
                params.push(point_params(method, dtype, rank, template));
            }
        }
    }
    let outcomes: Vec<Result<(OsdParams, Estimate), OsdError>> = params
        .into_iter()
        .map(|p| {
            let e = if exact {
                exact_outcome(analysis, &p)?
            } else {
                analysis.estimate(&p)
            };
            Ok((p, e))
        })
        .collect();
    let mut points = Vec::new();
    for outcome in outcomes {
        let (p, e) = outcome?;
        points.push(GridPoint {
            method: p.method,
            dtype: p.dtype,
            rank: if p.method == Method::Lora {
                e.relaxed_rank
            } else {
                p.rank
            },
            relaxed_rank: e.relaxed_rank,
            bytes: e.bytes,
            paper_bits: e.paper_bits,
            ratio: original as f64 / e.bytes.max(1) as f64,
            rel_error: e.rel_error,
            exact: exact || p.method == Method::Lora,
            pareto: false,
        });
    }
    mark_pareto(&mut points, original);
    Ok(points)
}

/// The grid as `osd tune` and the panel show it: every point predicted,
/// then the predicted Pareto front measured exactly and re-marked on what
/// was measured (`exact` measures every point).
pub fn tune(
    analysis: &AdapterAnalysis,
    methods: &[Method],
    dtypes: &[ValueDtype],
    ranks: &[usize],
    template: &OsdParams,
    exact: bool,
) -> Result<Vec<GridPoint>, OsdError> {
    let mut points = grid(analysis, methods, dtypes, ranks, template, exact)?;
    if exact {
        return Ok(points);
    }
    let original = analysis.original_bytes();
    // Measuring moves points, which can expose new front points: repeat
    // until every point on the front is measured.
    for _ in 0..8 {
        let measured: Vec<(usize, Estimate)> = points
            .par_iter()
            .enumerate()
            .filter(|(_, p)| p.pareto && !p.exact)
            .map(|(i, point)| {
                let p = point_params(point.method, point.dtype, point.rank, template);
                exact_outcome(analysis, &p).map(|e| (i, e))
            })
            .collect::<Result<_, _>>()?;
        if measured.is_empty() {
            break;
        }
        for (i, e) in measured {
            let point = &mut points[i];
            point.bytes = e.bytes;
            point.rel_error = e.rel_error;
            point.relaxed_rank = e.relaxed_rank;
            point.ratio = original as f64 / e.bytes.max(1) as f64;
            point.exact = true;
        }
        mark_pareto(&mut points, original);
    }
    Ok(points)
}

/// Marks the points smaller than `original` that no other point beats on
/// both size and error.
pub fn mark_pareto(points: &mut [GridPoint], original: u64) {
    let keys: Vec<(u64, f64)> = points.iter().map(|p| (p.bytes, p.rel_error)).collect();
    for (i, point) in points.iter_mut().enumerate() {
        let (b, e) = keys[i];
        let dominated = keys
            .iter()
            .enumerate()
            .any(|(j, &(b2, e2))| j != i && b2 <= b && e2 <= e && (b2 < b || e2 < e));
        point.pareto = !dominated && b < original;
    }
}

/// The pick under a byte limit.
#[derive(Debug, Clone, PartialEq)]
pub struct Pick {
    pub params: OsdParams,
    /// Measured bytes (of the compressed modules) and error.
    pub outcome: Estimate,
    /// Every finalist considered (one per method × dtype), measured.
    pub finalists: Vec<(OsdParams, Estimate)>,
}

/// The best point of one method × dtype whose predicted bytes fit `limit`.
fn best_fitting(
    analysis: &AdapterAnalysis,
    method: Method,
    dtype: ValueDtype,
    limit: u64,
    template: &OsdParams,
) -> Option<OsdParams> {
    let top = analysis.modules.iter().map(|m| m.rank()).max().unwrap_or(0);
    let base = point_params(method, dtype, 1, template);
    match method {
        Method::Lora => (analysis.estimate(&base).bytes <= limit).then_some(base),
        Method::Truncsvd | Method::LowrankSparse | Method::MaskedBlend => (1..=top)
            .rev()
            .map(|rank| OsdParams { rank, ..base })
            .find(|p| analysis.estimate(p).bytes <= limit),
        Method::Osd | Method::Magtrunc => {
            // The budget as a real TruncSVD rank ρ, bisected so the predicted
            // bytes fill the limit; r = ⌊ρ⌋ (at least 1) and c is searched.
            let at = |rho: f64| OsdParams {
                rank: (rho.floor() as usize).clamp(1, top.max(1)),
                budget_rank: Some(rho),
                ..base
            };
            let fits = |rho: f64| analysis.estimate(&at(rho)).bytes <= limit;
            let (mut lo, mut hi) = (0.0f64, top as f64);
            if fits(hi) {
                return Some(at(hi));
            }
            if !fits(lo) {
                return None;
            }
            for _ in 0..14 {
                let mid = 0.5 * (lo + hi);
                if fits(mid) {
                    lo = mid;
                } else {
                    hi = mid;
                }
            }
            (lo > 0.0).then(|| at(lo))
        }
    }
}

/// The best-fitting point of one method × dtype, built and measured; a
/// point whose measured bytes overshoot its prediction is shrunk. `None`
/// when nothing fits, or when the dtype cannot hold the values (f16 past
/// 65 504; f32 failing is a real error). Each dtype searches on its own:
/// the relaxed ranks chosen depend on the rounding.
fn measured_fit(
    analysis: &AdapterAnalysis,
    method: Method,
    dtype: ValueDtype,
    limit: u64,
    template: &OsdParams,
) -> Result<Option<(OsdParams, Estimate)>, OsdError> {
    let Some(mut p) = best_fitting(analysis, method, dtype, limit, template) else {
        return Ok(None);
    };
    for _ in 0..8 {
        let e = match exact_outcome(analysis, &p) {
            Ok(e) => e,
            Err(_) if dtype != ValueDtype::F32 => return Ok(None),
            Err(e) => return Err(e),
        };
        if e.bytes <= limit {
            return Ok(Some((p, e)));
        }
        match p.budget_rank {
            Some(rho) => p.budget_rank = Some(rho * 0.97),
            None if p.rank > 1 => p.rank -= 1,
            None => return Ok(None),
        }
    }
    Ok(None)
}

/// Finds, for each method × dtype, the point that best fills `limit` bytes
/// of compressed modules, measures each exactly (shrinking a point whose
/// measured bytes overshoot its prediction), and returns the one with the
/// smallest measured error. `None` when nothing fits.
pub fn pick(
    analysis: &AdapterAnalysis,
    limit: u64,
    methods: &[Method],
    dtypes: &[ValueDtype],
    template: &OsdParams,
) -> Result<Option<Pick>, OsdError> {
    let pairs: Vec<(Method, ValueDtype)> = methods
        .iter()
        .flat_map(|&m| dtypes.iter().map(move |&d| (m, d)))
        .collect();
    let finalists: Vec<(OsdParams, Estimate)> = pairs
        .par_iter()
        .map(|&(method, dtype)| measured_fit(analysis, method, dtype, limit, template))
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .flatten()
        .collect();
    let best = finalists
        .iter()
        .min_by(|a, b| {
            a.1.rel_error
                .total_cmp(&b.1.rel_error)
                .then(a.1.bytes.cmp(&b.1.bytes))
        })
        .copied();
    Ok(best.map(|(params, outcome)| Pick {
        params,
        outcome,
        finalists,
    }))
}
