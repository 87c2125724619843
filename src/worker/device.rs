//! Which device a worker runs its jobs on.

use std::fmt;
use std::str::FromStr;

/// A device a worker holds for its whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
}

/// What `--device` asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    Fixed(Device),
    /// A GPU of this host that no other live worker holds, else the CPU.
    Auto,
}

impl Device {
    pub fn to_tch(self) -> tch::Device {
        match self {
            Device::Cpu => tch::Device::Cpu,
            Device::Cuda(index) => tch::Device::Cuda(index),
        }
    }

    /// What a `command` job sees in `CUDA_VISIBLE_DEVICES`: its one GPU, or none.
    pub fn cuda_visible_devices(self) -> String {
        match self {
            Device::Cpu => String::new(),
            Device::Cuda(index) => index.to_string(),
        }
    }

    /// The GPUs libtorch sees on this host.
    pub fn gpus() -> Vec<Device> {
        if !tch::Cuda::is_available() {
            return Vec::new();
        }
        (0..tch::Cuda::device_count())
            .map(|i| Device::Cuda(i as usize))
            .collect()
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown device {0:?}: use cpu, cuda:N or auto")]
pub struct BadDevice(pub String);

impl FromStr for Device {
    type Err = BadDevice;
    fn from_str(text: &str) -> Result<Device, BadDevice> {
        if text == "cpu" {
            return Ok(Device::Cpu);
        }
        text.strip_prefix("cuda:")
            .and_then(|index| index.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| BadDevice(text.to_owned()))
    }
}

impl FromStr for DeviceRequest {
    type Err = BadDevice;
    fn from_str(text: &str) -> Result<DeviceRequest, BadDevice> {
        if text == "auto" {
            Ok(DeviceRequest::Auto)
        } else {
            text.parse().map(DeviceRequest::Fixed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_devices() {
        assert_eq!("cpu".parse(), Ok(DeviceRequest::Fixed(Device::Cpu)));
        assert_eq!("cuda:3".parse(), Ok(DeviceRequest::Fixed(Device::Cuda(3))));
        assert_eq!("auto".parse(), Ok(DeviceRequest::Auto));
        assert!("cuda".parse::<DeviceRequest>().is_err());
        assert!("gpu:0".parse::<DeviceRequest>().is_err());
        assert_eq!(Device::Cuda(3).to_string(), "cuda:3");
        assert_eq!(Device::Cuda(3).cuda_visible_devices(), "3");
        assert_eq!(Device::Cpu.cuda_visible_devices(), "");
    }
}
