//! The device a model runs on, chosen by name: `cpu`, `cuda` or `cuda:N`.
//!
//! A binary built without the `cuda` feature refuses `cuda` with a clear
//! error instead of failing later inside a kernel.

use candle_core::Device;

use crate::{ModelError, Result};

/// The device named `name` (`cpu`, `cuda` = `cuda:0`, `cuda:N`).
pub fn device_from_name(name: &str) -> Result<Device> {
    let name = name.trim();
    if name.is_empty() || name == "cpu" {
        return Ok(Device::Cpu);
    }
    let ordinal = match name.strip_prefix("cuda") {
        Some("") => 0,
        Some(rest) => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .ok_or_else(|| unknown(name))?,
        None => return Err(unknown(name)),
    };
    cuda(ordinal)
}

fn unknown(name: &str) -> ModelError {
    ModelError::Device(format!("unknown device {name:?} (cpu, cuda or cuda:N)"))
}

#[cfg(feature = "cuda")]
fn cuda(ordinal: usize) -> Result<Device> {
    Device::new_cuda(ordinal)
        .map_err(|e| ModelError::Device(format!("no usable CUDA GPU {ordinal}: {e}")))
}

#[cfg(not(feature = "cuda"))]
fn cuda(_ordinal: usize) -> Result<Device> {
    Err(ModelError::Device(
        "this binary was built without CUDA support (cargo feature `cuda`)".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_empty_names_are_the_cpu() {
        assert!(device_from_name("cpu").unwrap().is_cpu());
        assert!(device_from_name(" ").unwrap().is_cpu());
    }

    #[test]
    fn other_names_are_refused_with_the_choices() {
        for name in ["gpu", "cuda:x", "cuda:", "cuda1", "metal"] {
            let e = device_from_name(name).unwrap_err().to_string();
            assert!(e.contains("cpu, cuda or cuda:N"), "{name}: {e}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_the_binary_was_built() {
        let e = device_from_name("cuda:0").unwrap_err().to_string();
        assert!(e.contains("built without CUDA support"), "{e}");
    }
}
