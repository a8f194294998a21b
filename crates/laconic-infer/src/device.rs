//! Choosing the compute device by name (`--device`, a recipe's `model.device`).

use burn::prelude::*;

use crate::error::{InferError, Result};

/// The device a name stands for: `flex` (or `cpu`), `cuda`, `wgpu`, `tch`. GPU backends
/// exist only when compiled in (cargo features of the same names).
pub fn parse_device(name: &str) -> Result<Device> {
    match name {
        "flex" | "cpu" => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0)),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::default())),
        #[cfg(feature = "tch")]
        "tch" => Ok(Device::libtorch()),
        "cuda" | "wgpu" | "tch" => Err(InferError::InvalidArgument(format!(
            "device '{name}' needs laconic built with `--features {name}` (see README: GPU backends)"
        ))),
        other => Err(InferError::InvalidArgument(format!(
            "unknown device '{other}' (choose flex, cuda, wgpu or tch)"
        ))),
    }
}
