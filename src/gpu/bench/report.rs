//! What a benchmark run reports: each figure (median, min–max) beside the
//! anchors measured in the same run, the machine, and the two renderings
//! the CLI and the TUI share (the text table and the ratios for plots).

use serde::Serialize;

/// Median and spread of a set of samples.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq)]
pub struct Stats {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub samples: usize,
}

impl Stats {
    /// Median, min and max of the finite samples.
    pub fn of(samples: &[f64]) -> Self {
        let mut v: Vec<f64> = samples.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Self::default();
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Self {
            median,
            min: v[0],
            max: v[n - 1],
            samples: n,
        }
    }

    pub(super) fn map(self, f: impl Fn(f64) -> f64) -> Self {
        let (a, b) = (f(self.min), f(self.max));
        Self {
            median: f(self.median),
            min: a.min(b),
            max: a.max(b),
            samples: self.samples,
        }
    }
}

/// What a figure is compared with, measured in the same run, same unit.
#[derive(Debug, Clone, Serialize)]
pub struct Anchor {
    pub label: String,
    pub value: Stats,
    /// value.median / anchor.median.
    pub ratio: f64,
}

/// One measured figure beside its anchors.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub key: String,
    pub label: String,
    pub unit: String,
    /// `lower` or `higher` is better.
    pub better: &'static str,
    pub value: Stats,
    pub anchors: Vec<Anchor>,
    /// Targets from the issue, for the reader (not measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl Figure {
    pub(super) fn new(
        key: &str,
        label: &str,
        unit: &str,
        better: &'static str,
        value: Stats,
    ) -> Self {
        Self {
            key: key.into(),
            label: label.into(),
            unit: unit.into(),
            better,
            value,
            anchors: Vec::new(),
            target: None,
            note: None,
        }
    }

    pub(super) fn anchor(mut self, label: &str, value: Stats) -> Self {
        let ratio = if value.median > 0.0 {
            self.value.median / value.median
        } else {
            f64::NAN
        };
        self.anchors.push(Anchor {
            label: label.into(),
            value,
            ratio,
        });
        self
    }

    pub(super) fn target(mut self, t: &str) -> Self {
        self.target = Some(t.into());
        self
    }

    pub(super) fn note(mut self, n: impl Into<String>) -> Self {
        self.note = Some(n.into());
        self
    }
}

/// The machine a report was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub os: String,
}

impl Machine {
    /// This machine (CPU model, cores, OS).
    pub fn this() -> Self {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Self {
            cpu,
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            os: std::env::consts::OS.into(),
        }
    }
}

/// Every figure of one benchmark run.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub machine: Machine,
    pub device: String,
    pub file: String,
    pub format: String,
    pub file_bytes: u64,
    pub tensor_bytes: u64,
    pub tensor_sections: usize,
    pub modules: usize,
    pub repeat: usize,
    /// `base` or `synthetic` weights for the fuse figures.
    pub fuse_base: String,
    pub figures: Vec<Figure>,
    pub notes: Vec<String>,
}

impl BenchReport {
    /// The figure with this key.
    pub fn figure(&self, key: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.key == key)
    }
}

/// A figure as the table prints it: 3 significant-ish digits, `n/a` when not finite.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        "n/a".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else if v.abs() >= 0.1 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

fn stat(s: &Stats, unit: &str) -> String {
    format!("{} {unit} ({}–{})", num(s.median), num(s.min), num(s.max))
}

impl BenchReport {
    /// Each figure against each of its anchors as a speed ratio: > 1 means
    /// better than the anchor, whichever way the unit points (anchor/value
    /// for times and sizes, value/anchor for bandwidths). `(label, ratio)`.
    pub fn relative(&self) -> Vec<(String, f64)> {
        self.figures
            .iter()
            .flat_map(|f| {
                f.anchors.iter().map(move |a| {
                    let ratio = if f.better == "higher" {
                        f.value.median / a.value.median
                    } else {
                        a.value.median / f.value.median
                    };
                    (format!("{} vs {}", f.label, a.label), ratio)
                })
            })
            .collect()
    }

    /// The report as a text table: one line per figure, its anchors below
    /// (the CLI prints it; the TUI's benchmark panel shows it).
    pub fn table(&self) -> String {
        let report = self;
        let mut out = format!(
            "expertui bench: {} ({}, {} bytes, {} tensor sections, {} modules) on {}, {} runs\nmachine: {}, {} cores\n\n",
            report.file,
            report.format,
            report.file_bytes,
            report.tensor_sections,
            report.modules,
            report.device,
            report.repeat,
            report.machine.cpu,
            report.machine.cores,
        );
        out.push_str(&format!(
            "{:<52} {:>30}   {}\n",
            "figure", "median (min–max)", "anchor: median (min–max), ratio"
        ));
        for f in &report.figures {
            let mut anchors = f.anchors.iter();
            let first = anchors.next().map(|a| {
                format!(
                    "{}: {}, ×{}",
                    a.label,
                    stat(&a.value, &f.unit),
                    num(a.ratio)
                )
            });
            out.push_str(&format!(
                "{:<52} {:>30}   {}\n",
                f.label,
                stat(&f.value, &f.unit),
                first.unwrap_or_default()
            ));
            for a in anchors {
                out.push_str(&format!(
                    "{:<52} {:>30}   {}: {}, ×{}\n",
                    "",
                    "",
                    a.label,
                    stat(&a.value, &f.unit),
                    num(a.ratio)
                ));
            }
            if let Some(n) = &f.note {
                out.push_str(&format!("{:<52} {:>30}   ({n})\n", "", ""));
            }
        }
        for n in &report.notes {
            out.push_str(&format!("note: {n}\n"));
        }
        out
    }
}

impl BenchReport {
    /// The plot of the report: one bar per (figure, anchor), > 1 is better.
    pub fn bars(&self) -> crate::plot::BarChart {
        crate::plot::BarChart {
            title: format!(
                "expertui bench on {} ({}): relative to each anchor, > 1 is better",
                self.device, self.machine.cpu
            ),
            x_label: "speed relative to the anchor (log scale)".into(),
            bars: self
                .relative()
                .into_iter()
                .map(|(label, value)| crate::plot::Bar { label, value })
                .collect(),
        }
    }
}
