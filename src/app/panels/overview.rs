//! Overview panel: header fields, integrity, manifest summary, section sizes.

use std::convert::Infallible;

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Paragraph, Wrap};
use ratatui::Frame;
use serde_json::Value;

use crate::app::checks::Verification;
use crate::app::context::Context;
use crate::app::keys::Binding;
use crate::app::panel::Panel;
use crate::app::theme::Theme;
use crate::format::inspect::{Opened, SectionRow};
use crate::format::SectionType;

/// The overview: it only shows what the app knows.
#[derive(Default)]
pub struct Overview;

impl Panel for Overview {
    const TITLE: &'static str = "Overview";
    const NAME: &'static str = "overview";
    type Action = Infallible;
    type Message = Infallible;
    const BINDINGS: &'static [Binding<Infallible>] = &[];

    fn draw(&mut self, frame: &mut Frame, area: Rect, ctx: &mut Context) {
        let theme = ctx.theme;
        let [left, right] =
            Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
                .areas(area);
        let [manifest_area, sizes_area] =
            Layout::vertical([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(right);
        let boxed = |title: &'static str| {
            Block::default()
                .borders(Borders::ALL)
                .title(Span::styled(title, theme.title()))
        };
        frame.render_widget(
            Paragraph::new(file_lines(ctx, theme, left.width.saturating_sub(2)))
                .wrap(Wrap { trim: false })
                .block(boxed(" file ")),
            left,
        );
        frame.render_widget(
            Paragraph::new(manifest_lines(ctx, theme))
                .wrap(Wrap { trim: false })
                .block(boxed(" manifest ")),
            manifest_area,
        );
        frame.render_widget(
            Paragraph::new(size_lines(ctx.rows, ctx.verification, theme))
                .block(boxed(" sections ")),
            sizes_area,
        );
    }
}

fn field(name: &str, value: String, theme: Theme) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{name:<18}"), theme.dim()),
        Span::raw(value),
    ])
}

/// The file column: header fields, signature, digests, then the findings.
fn file_lines(ctx: &Context, theme: Theme, width: u16) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    match &ctx.doc.opened {
        Opened::Binary(r) => {
            let h = r.header();
            lines.push(field(
                "format",
                format!(
                    ".expert v{}.{}",
                    h.version_major.get(),
                    h.version_minor.get()
                ),
                theme,
            ));
            lines.push(field(
                "file size",
                format!("{} bytes", r.file_size()),
                theme,
            ));
            lines.push(field("header size", h.header_size.get().to_string(), theme));
            lines.push(field("flags", format!("{:#x}", h.flags.get()), theme));
            lines.push(field(
                "TOC",
                format!("{} entries at {:#x}", h.toc_count.get(), h.toc_offset.get()),
                theme,
            ));
            lines.push(field(
                "alignment",
                format!("{} bytes", h.section_alignment.get()),
                theme,
            ));
            // The whole digest, in as few aligned pieces as the width allows.
            let digest = hex::encode(h.root_digest);
            let room = usize::from(width).saturating_sub(18);
            let piece = [64, 32, 16, 8]
                .into_iter()
                .find(|&n| n <= room)
                .unwrap_or(8);
            for (i, chunk) in digest.as_bytes().chunks(piece).enumerate() {
                let text = String::from_utf8_lossy(chunk).into_owned();
                lines.push(field(if i == 0 { "root digest" } else { "" }, text, theme));
            }
            lines.extend(signature_lines(r, ctx, theme));
            lines.push(Line::raw(""));
            lines.push(match &ctx.doc.root_error {
                None => Line::from(Span::styled(
                    "root digest OK (header + TOC intact)",
                    theme.ok(),
                )),
                Some(e) => Line::from(Span::styled(format!("ROOT MISMATCH: {e}"), theme.damaged())),
            });
            lines.push(match &*ctx.verification {
                Verification::Running => Line::raw("verifying sections…"),
                Verification::Done { checks, tail_clean } => {
                    let bad = checks.iter().filter(|c| !c.ok()).count();
                    if bad == 0 && *tail_clean {
                        Line::from(Span::styled(
                            format!("all {} sections verified", checks.len()),
                            theme.ok(),
                        ))
                    } else {
                        Line::from(Span::styled(
                            format!("{bad} DAMAGED section(s): see Integrity (4)"),
                            theme.damaged(),
                        ))
                    }
                }
                Verification::NotApplicable => Line::raw(""),
            });
        }
        Opened::Legacy(files) => {
            lines.push(field("format", "legacy tar.gz (deprecated)".into(), theme));
            lines.push(field(
                "file size",
                format!("{} bytes", ctx.doc.len()),
                theme,
            ));
            lines.push(field("members", files.len().to_string(), theme));
            lines.push(Line::raw(""));
            lines.push(Line::raw(
                "convert: expertui --headless convert FILE -o OUT.expert",
            ));
        }
        Opened::Broken(e) => {
            lines.push(Line::from(Span::styled(
                "cannot parse this file",
                theme.damaged(),
            )));
            lines.push(Line::raw(e.to_string()));
            if let Some(offset) = e.offset() {
                lines.push(Line::raw(format!(
                    "at offset {offset:#x}: see the hex view (2)"
                )));
            }
        }
    }
    lines.extend(findings_lines(ctx.findings, theme));
    lines
}

/// Each section's stored and raw size and codec, with the totals.
fn size_lines(
    rows: &[SectionRow],
    verification: &crate::app::checks::Verification,
    theme: Theme,
) -> Vec<Line<'static>> {
    let total_stored: u64 = rows.iter().map(|r| r.stored_len).sum();
    let total_raw: u64 = rows.iter().map(|r| r.raw_len).sum();
    let mut sizes = vec![Line::from(Span::styled(
        format!(
            "{:<22} {:>9} {:>9} {:<6}",
            "section", "stored", "raw", "codec"
        ),
        theme.dim(),
    ))];
    // Damaged sections red here too, as in every list.
    sizes.extend(rows.iter().enumerate().map(|(i, r)| {
        let text = format!(
            "{:<22} {:>9} {:>9} {:<6}",
            truncate(&r.name, 22),
            r.stored_len,
            r.raw_len,
            r.codec
        );
        if verification.damaged(i) {
            Line::from(Span::styled(text, theme.damaged()))
        } else {
            Line::raw(text)
        }
    }));
    sizes.push(Line::raw(format!(
        "{:<22} {:>9} {:>9} ratio {:.3}",
        "total",
        total_stored,
        total_raw,
        total_raw as f64 / total_stored.max(1) as f64
    )));
    sizes
}

/// Signature state as far as it can be told without trusted keys: the
/// signature checked with its embedded key, certificates against the clock.
fn signature_lines(
    reader: &crate::format::ExpertReader,
    ctx: &Context,
    theme: Theme,
) -> Vec<Line<'static>> {
    use crate::format::signing::{format_utc, inspect, SignatureState};
    let mut report = inspect(reader);
    // The signature vouches for the sections through their digests: once
    // the background check found damage, it vouches for nothing.
    if let Verification::Done { checks, .. } = &*ctx.verification {
        if let Some(bad) = checks.iter().find_map(|c| c.error()) {
            report.fail(crate::format::signing::SigningError::Format(bad));
        }
    }
    let key = report.key_id.map(|k| k.to_string()).unwrap_or_default();
    let mut lines = match (report.state, report.signature_ok) {
        (SignatureState::Unsigned, _) => {
            let mut lines = vec![field("signature", "unsigned".into(), theme)];
            if ctx.trust.is_some_and(|t| !t.passes) {
                lines.push(Line::from(vec![
                    Span::styled(format!("{:<18}", "trust"), theme.dim()),
                    Span::styled("REFUSED: the policy requires a signature", theme.damaged()),
                ]));
            }
            return lines;
        }
        (SignatureState::Valid | SignatureState::Untrusted, true) => vec![Line::from(vec![
            Span::styled(format!("{:<18}", "signature"), theme.dim()),
            Span::styled(format!("signed by {key}"), theme.ok()),
        ])],
        (state, _) => vec![Line::from(vec![
            Span::styled(format!("{:<18}", "signature"), theme.dim()),
            Span::styled(
                format!(
                    "{}: {}",
                    state.label().to_uppercase(),
                    report
                        .error
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default()
                ),
                theme.damaged(),
            ),
        ])],
    };
    if let (Some(signer), Some(time)) = (&report.signer, report.timestamp) {
        lines.push(field(
            "signer",
            format!("{signer}, {}", format_utc(time)),
            theme,
        ));
    }
    for (i, cert) in report.chain.iter().enumerate() {
        lines.push(field(
            if i == 0 { "chain" } else { "" },
            format!("{} <- {}", cert.name, cert.issuer),
            theme,
        ));
    }
    lines.push(match ctx.trust {
        Some(t) => Line::from(vec![
            Span::styled(format!("{:<18}", "trust"), theme.dim()),
            Span::styled(
                if t.passes {
                    format!("admitted: {}", crate::diagnostics::printable(&t.summary))
                } else {
                    format!("REFUSED: {}", crate::diagnostics::printable(&t.summary))
                },
                if t.passes {
                    theme.ok()
                } else {
                    theme.damaged()
                },
            ),
        ]),
        None => field(
            "trust",
            "not checked (no trust policy: --trust, --pubkey or --policy)".into(),
            theme,
        ),
    });
    lines
}

fn truncate(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        s.to_string()
    } else {
        s.chars().take(width - 1).collect::<String>() + "…"
    }
}

fn manifest_lines(ctx: &Context, theme: Theme) -> Vec<Line<'static>> {
    let Some(index) = ctx
        .rows
        .iter()
        .position(|r| r.kind == SectionType::Manifest)
    else {
        return vec![Line::raw("no manifest")];
    };
    let manifest: Value = match ctx.doc.decode(index) {
        Ok(crate::format::inspect::Decoded::Json(text)) => {
            serde_json::from_str(&text).unwrap_or(Value::Null)
        }
        Ok(_) => Value::Null,
        Err(e) => {
            return vec![Line::from(Span::styled(
                format!("manifest unreadable: {e}"),
                theme.damaged(),
            ))]
        }
    };
    let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("?").to_string();
    let mut lines = vec![
        field("name", text(manifest.get("name")), theme),
        field("version", text(manifest.get("version")), theme),
        field("schema", text(manifest.get("schema_version")), theme),
    ];
    let bases: Vec<&Value> = match (manifest.get("base_models"), manifest.get("base_model")) {
        (Some(Value::Array(list)), _) => list.iter().collect(),
        (_, Some(single)) => vec![single],
        _ => Vec::new(),
    };
    for base in bases {
        let name = base
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| text(base.get("name")));
        lines.push(field("base model", name, theme));
        let adapters = base.get("adapters").or_else(|| manifest.get("adapters"));
        for adapter in adapters.and_then(Value::as_array).into_iter().flatten() {
            let modules: Vec<&str> = adapter
                .get("target_modules")
                .and_then(Value::as_array)
                .map(|m| m.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            lines.push(field(
                "  adapter",
                format!(
                    "{} r={} alpha={} on {}",
                    text(adapter.get("type")),
                    adapter.get("r").map_or("-".into(), Value::to_string),
                    adapter.get("alpha").map_or("-".into(), Value::to_string),
                    modules.join(",")
                ),
                theme,
            ));
        }
    }
    if let Some(keywords) = manifest
        .pointer("/routing/keywords")
        .and_then(Value::as_array)
    {
        let words: Vec<&str> = keywords.iter().filter_map(Value::as_str).collect();
        lines.push(field("routing", words.join(", "), theme));
    }
    lines
}

/// The validation findings, worst first: one line each (code, place, message).
fn findings_lines(findings: &[crate::diagnostics::Finding], theme: Theme) -> Vec<Line<'static>> {
    use crate::diagnostics::Severity;
    if findings.is_empty() {
        return Vec::new();
    }
    let mut sorted: Vec<_> = findings.iter().collect();
    sorted.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let mut lines = vec![
        Line::raw(""),
        Line::from(Span::styled(
            format!("findings ({})", findings.len()),
            theme.title(),
        )),
    ];
    for f in sorted {
        let style = match f.severity {
            Severity::Error | Severity::Warning => theme.damaged(),
            Severity::Note => theme.dim(),
        };
        let place = f.location.to_string();
        lines.push(Line::from(Span::styled(
            format!(
                "{} {}{}: {}",
                f.severity.label(),
                f.code,
                if place.is_empty() {
                    String::new()
                } else {
                    format!(" {place}")
                },
                f.message
            ),
            style,
        )));
    }
    lines
}
