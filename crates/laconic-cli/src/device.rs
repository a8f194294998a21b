//! Choosing the compute device from `--device`.

use anyhow::{Result, bail};
use burn::prelude::*;

/// The device a `--device` value names. GPU backends exist only when compiled in.
pub fn parse(name: &str) -> Result<Device> {
    match name {
        "flex" | "cpu" => Ok(Device::flex()),
        #[cfg(feature = "cuda")]
        "cuda" => Ok(Device::cuda(0)),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::default())),
        #[cfg(feature = "tch")]
        "tch" => Ok(Device::libtorch()),
        "cuda" | "wgpu" | "tch" => bail!(
            "device '{name}' needs laconic built with `--features {name}` (see README: GPU backends)"
        ),
        other => bail!("unknown device '{other}' (choose flex, cuda, wgpu or tch)"),
    }
}
