//! The legacy packager's rules (semver, base models, adapters, ranks), each
//! naming the JSON pointer it concerns.

use super::{Adapter, BaseModelRef, Manifest, RuleViolation, SchemaVersion};

/// `MAJOR.MINOR.PATCH[-pre][+build]` per semver 2.0 (no leading zeros in numeric parts).
pub(super) fn is_semver(v: &str) -> bool {
    fn numeric(s: &str) -> bool {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
    }
    fn idents(s: &str, pre: bool) -> bool {
        s.split('.').all(|id| {
            !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && (!pre || !id.bytes().all(|b| b.is_ascii_digit()) || numeric(id))
        })
    }
    let (rest, build) = match v.split_once('+') {
        Some((r, b)) => (r, Some(b)),
        None => (v, None),
    };
    let (core, pre) = match rest.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (rest, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts.iter().all(|p| numeric(p))
        && pre.is_none_or(|p| idents(p, true))
        && build.is_none_or(|b| idents(b, false))
}

fn check_adapters(adapters: Option<&[Adapter]>, path: &str, out: &mut Vec<RuleViolation>) {
    let adapters = match adapters {
        None => {
            out.push(RuleViolation::new(path, "adapters are missing"));
            return;
        }
        Some([]) => {
            out.push(RuleViolation::new(path, "adapters are empty"));
            return;
        }
        Some(a) => a,
    };
    for (i, a) in adapters.iter().enumerate() {
        let p = format!("{path}/{i}");
        let kind = a.kind();
        if a.adapter_type.trim().is_empty() {
            out.push(RuleViolation::new(
                format!("{p}/type"),
                "adapter type is empty",
            ));
        }
        // Prompt learning trains embeddings only; PEFT gives it no target modules.
        if !kind.is_prompt_learning() {
            match a.target_modules.as_deref() {
                None | Some([]) => out.push(RuleViolation::new(
                    format!("{p}/target_modules"),
                    "target_modules is missing or empty",
                )),
                Some(mods) => {
                    for (j, m) in mods.iter().enumerate() {
                        if m.trim().is_empty() {
                            out.push(RuleViolation::new(
                                format!("{p}/target_modules/{j}"),
                                "empty module name",
                            ));
                        }
                    }
                }
            }
        }
        match a.r {
            None if kind.requires_rank() => out.push(RuleViolation::new(
                format!("{p}/r"),
                format!("rank r is required for adapter type `{}`", a.adapter_type),
            )),
            Some(0) => out.push(RuleViolation::new(format!("{p}/r"), "rank r must be >= 1")),
            _ => {}
        }
    }
}

/// The packaging rules of the legacy packager, each naming the JSON path it concerns.
pub fn check_rules(m: &Manifest) -> Vec<RuleViolation> {
    let mut out = Vec::new();
    if m.name.trim().is_empty() {
        out.push(RuleViolation::new("/name", "name is empty"));
    }
    if m.version.trim().is_empty() {
        out.push(RuleViolation::new("/version", "version is empty"));
    } else if !is_semver(&m.version) {
        out.push(RuleViolation::new(
            "/version",
            format!("version `{}` is not semver (MAJOR.MINOR.PATCH)", m.version),
        ));
    }

    match m.schema() {
        None => out.push(RuleViolation::new(
            "/schema_version",
            format!(
                "unknown schema_version `{}` (expected \"1.0\" or \"2.0\")",
                m.schema_version.as_deref().unwrap_or_default()
            ),
        )),
        Some(SchemaVersion::V1) => {
            if m.base_models.is_some() {
                out.push(RuleViolation::new(
                    "/base_models",
                    "base_models belongs to schema_version \"2.0\"; 1.0 uses base_model",
                ));
            }
            match &m.base_model {
                None => out.push(RuleViolation::new(
                    "/base_model",
                    "schema_version 1.0 needs base_model",
                )),
                Some(b) if b.name().trim().is_empty() => {
                    let p = match b {
                        BaseModelRef::Name(_) => "/base_model",
                        BaseModelRef::Model(_) => "/base_model/name",
                    };
                    out.push(RuleViolation::new(p, "base model name is empty"));
                }
                Some(_) => {}
            }
            check_adapters(m.adapters.as_deref(), "/adapters", &mut out);
        }
        Some(SchemaVersion::V2) => {
            if m.base_model.is_some() {
                out.push(RuleViolation::new(
                    "/base_model",
                    "base_model belongs to schema_version \"1.0\"; 2.0 uses base_models",
                ));
            }
            if m.adapters.is_some() {
                out.push(RuleViolation::new(
                    "/adapters",
                    "schema_version 2.0 keeps adapters under base_models[]",
                ));
            }
            match m.base_models.as_deref() {
                None => out.push(RuleViolation::new(
                    "/base_models",
                    "schema_version 2.0 needs base_models",
                )),
                Some([]) => out.push(RuleViolation::new("/base_models", "base_models is empty")),
                Some(models) => {
                    for (i, b) in models.iter().enumerate() {
                        if b.name.trim().is_empty() {
                            out.push(RuleViolation::new(
                                format!("/base_models/{i}/name"),
                                "base model name is empty",
                            ));
                        }
                        let p = format!("/base_models/{i}/adapters");
                        check_adapters(b.adapters.as_deref(), &p, &mut out);
                    }
                }
            }
        }
    }

    if let Some(priority) = m.routing.as_ref().and_then(|r| r.priority.as_ref()) {
        let ok = priority.as_f64().is_some_and(|p| (0.0..=1.0).contains(&p));
        if !ok {
            out.push(RuleViolation::new(
                "/routing/priority",
                format!("priority {priority} is outside [0, 1]"),
            ));
        }
    }
    out
}
