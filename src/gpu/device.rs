//! Device names: `cpu`, `cuda` / `cuda:N` (with the `cuda` cargo feature).

use candle_core::{Device, DeviceLocation};

use super::error::{Result, RuntimeError};

/// Parses `cpu`, `cuda` or `cuda:N` into a candle device.
pub fn parse_device(spec: &str) -> Result<Device> {
    let s = spec.trim().to_ascii_lowercase();
    if s == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match s.as_str() {
        "cuda" | "gpu" => Some(0),
        _ => s
            .strip_prefix("cuda:")
            .and_then(|n| n.parse::<usize>().ok()),
    };
    match ordinal {
        Some(n) => cuda(n),
        None => Err(RuntimeError::Device(format!(
            "unknown device {spec:?}: use cpu or cuda:N"
        ))),
    }
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal)
        .map_err(|e| RuntimeError::Device(format!("cuda:{ordinal} is not usable: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn cuda(ordinal: usize) -> Result<Device> {
    Err(RuntimeError::Device(format!(
        "cuda:{ordinal} requested, but this build has no CUDA support: rebuild with \
         `cargo build --release --features cuda` (see docs/GPU.md)"
    )))
}

/// Whether this build can drive CUDA devices at all.
pub const fn cuda_compiled() -> bool {
    cfg!(feature = "cuda")
}

/// `cpu` or `cuda:N`, the inverse of [`parse_device`].
pub fn device_label(device: &Device) -> String {
    match device.location() {
        DeviceLocation::Cpu => "cpu".into(),
        DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
        DeviceLocation::Metal { gpu_id } => format!("metal:{gpu_id}"),
    }
}

/// Devices a picker may offer: `cpu`, plus `cuda:0` when built with CUDA and
/// a driver answers.
pub fn available_devices() -> Vec<String> {
    let mut out = vec!["cpu".to_string()];
    if cuda_compiled() && candle_core::utils::cuda_is_available() && cuda(0).is_ok() {
        out.push("cuda:0".into());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cpu_and_rejects_junk() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        assert!(parse_device(" CPU ").unwrap().is_cpu());
        assert_eq!(device_label(&Device::Cpu), "cpu");
        let err = parse_device("tpu:0").unwrap_err().to_string();
        assert!(err.contains("unknown device"), "{err}");
        assert!(parse_device("cuda:x").is_err());
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_is_a_clear_error() {
        let err = parse_device("cuda:0").unwrap_err().to_string();
        assert!(err.contains("--features cuda"), "{err}");
        assert_eq!(available_devices(), vec!["cpu".to_string()]);
    }
}
