//! What this host can train on, and which device a worker takes.
//!
//! [`describe`] reports libtorch's version, whether CUDA works, and each GPU with its
//! name and memory (the `sweeper devices` output). libtorch through `tch` knows how
//! many GPUs there are but not their names, so names and memory come from
//! `nvidia-smi` where it is installed; without it the report lists the indices only.
//!
//! [`DeviceRequest`] is the one parser of a `--device` value (`cpu`, `cuda`, `cuda:N`,
//! `auto`), [`DeviceRequest::check`] refuses a GPU this host lacks, and
//! [`pick_auto`] resolves `auto` to the lowest GPU no other worker of this host holds.
//!
//! Over 700 lines with its unit tests (a third of the file); the host report
//! (`describe`, nvidia-smi parsing) and the `--device` vocabulary are the seam to
//! split next.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

use serde::Serialize;

/// Everything `sweeper devices` prints.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DevicesReport {
    /// libtorch's version as its `version.py` states it (`2.11.0+cu130`).
    pub libtorch_version: Option<String>,
    /// The CUDA version libtorch was built against (`13.0`), `None` for a CPU build.
    pub libtorch_cuda_build: Option<String>,
    /// The directory the loaded `libtorch_cpu.so` came from.
    pub libtorch_dir: Option<PathBuf>,
    /// libtorch's CUDA half (`libtorch_cuda.so`) is loaded in this process.
    pub cuda_built: bool,
    /// A CUDA device can be used right now.
    pub cuda_available: bool,
    pub cudnn_available: bool,
    /// cuDNN's version number as libtorch reports it (`91002` for 9.10.2).
    pub cudnn_version: Option<i64>,
    /// GPUs visible to this process (after `CUDA_VISIBLE_DEVICES`).
    pub device_count: i64,
    /// One entry per visible GPU, in CUDA's order (`cuda:0` first).
    pub gpus: Vec<GpuInfo>,
    /// Why GPU names and memory are missing, where they are.
    pub gpu_details_note: Option<String>,
}

/// One visible GPU.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuInfo {
    /// The CUDA index this process uses (`cuda:N`).
    pub index: i64,
    pub name: Option<String>,
    pub memory_total_mib: Option<u64>,
}

/// Looks at the loaded libtorch, CUDA and `nvidia-smi`. Takes a moment where CUDA is
/// present (the driver initialises), so call it once.
pub fn describe() -> DevicesReport {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let libtorch_dir = loaded_library_dir(&maps, "libtorch_cpu.so").or_else(|| {
        option_env!("SWEEPER_LIBTORCH_LIB")
            .map(PathBuf::from)
            .filter(|dir| dir.is_dir())
    });
    let version = libtorch_dir
        .as_deref()
        .and_then(|dir| std::fs::read_to_string(dir.join("../version.py")).ok())
        .map(|text| parse_version_py(&text))
        .unwrap_or_default();
    // libtorch's own `hasCUDA()` means "a GPU is usable", not "built with CUDA":
    // whether the CUDA half is loaded is what tells a CPU-only build apart.
    let cuda_built = loaded_library_dir(&maps, "libtorch_cuda.so").is_some();
    let cuda_available = tch::Cuda::is_available();
    let device_count = if cuda_available {
        tch::Cuda::device_count()
    } else {
        0
    };
    let cudnn_available = cuda_available && tch::Cuda::cudnn_is_available();
    // Only asked when cuDNN is usable: libtorch raises (and tch panics) otherwise.
    let cudnn_version = cudnn_available.then(tch::utils::version_cudnn);

    let (gpus, gpu_details_note) = if device_count == 0 {
        (Vec::new(), None)
    } else {
        match nvidia_smi_gpus() {
            Ok(rows) => {
                let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
                match match_visible_gpus(&rows, visible.as_deref(), device_count) {
                    Some(gpus) => (gpus, None),
                    None => (
                        indices_only(device_count),
                        Some(format!(
                            "nvidia-smi lists {} GPUs that do not match the {device_count} \
                             visible ones (CUDA_VISIBLE_DEVICES={})",
                            rows.len(),
                            visible.as_deref().unwrap_or("unset")
                        )),
                    ),
                }
            }
            Err(why) => (indices_only(device_count), Some(why)),
        }
    };

    DevicesReport {
        libtorch_version: version.version,
        libtorch_cuda_build: version.cuda,
        libtorch_dir,
        cuda_built,
        cuda_available,
        cudnn_available,
        cudnn_version,
        device_count,
        gpus,
        gpu_details_note,
    }
}

fn indices_only(count: i64) -> Vec<GpuInfo> {
    (0..count)
        .map(|index| GpuInfo {
            index,
            name: None,
            memory_total_mib: None,
        })
        .collect()
}

/// The directory of the library `file_name` this process really loaded (the one
/// the rpath chose), from the text of `/proc/self/maps`.
fn loaded_library_dir(maps: &str, file_name: &str) -> Option<PathBuf> {
    maps.lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .find(|path| Path::new(path).file_name().is_some_and(|n| n == file_name))
        .and_then(|path| Path::new(path).parent())
        .map(Path::to_path_buf)
}

/// What torch's `version.py` says.
#[derive(Debug, Default, PartialEq, Eq)]
struct TorchVersion {
    version: Option<String>,
    cuda: Option<String>,
}

/// Reads `__version__ = '2.11.0+cu130'` and `cuda: Optional[str] = '13.0'` (or
/// `= None`) from torch's `version.py`.
fn parse_version_py(text: &str) -> TorchVersion {
    let value_of = |name: &str| {
        text.lines().find_map(|line| {
            let (lhs, rhs) = line.split_once('=')?;
            let lhs = lhs.split(':').next()?.trim();
            (lhs == name).then(|| {
                rhs.trim()
                    .trim_matches(|c| c == '\'' || c == '"')
                    .to_string()
            })
        })
    };
    TorchVersion {
        version: value_of("__version__").filter(|v| !v.is_empty()),
        cuda: value_of("cuda").filter(|v| !v.is_empty() && v != "None"),
    }
}

/// One row of `nvidia-smi --query-gpu=index,uuid,name,memory.total`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SmiGpu {
    index: i64,
    uuid: String,
    name: String,
    memory_total_mib: Option<u64>,
}

fn nvidia_smi_gpus() -> Result<Vec<SmiGpu>, String> {
    let out = Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,uuid,name,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .map_err(|e| format!("GPU names need nvidia-smi, which could not run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nvidia-smi failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_nvidia_smi(&String::from_utf8_lossy(&out.stdout))
}

/// Parses `0, GPU-5a…, NVIDIA H200, 143771` lines (no header, no units).
fn parse_nvidia_smi(csv: &str) -> Result<Vec<SmiGpu>, String> {
    csv.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split(',').map(str::trim).collect();
            let [index, uuid, name @ .., memory] = fields.as_slice() else {
                return Err(format!("unexpected nvidia-smi line {line:?}"));
            };
            if name.is_empty() {
                return Err(format!("unexpected nvidia-smi line {line:?}"));
            }
            Ok(SmiGpu {
                index: index
                    .parse()
                    .map_err(|_| format!("nvidia-smi line {line:?}: index {index:?}"))?,
                uuid: uuid.to_string(),
                // A name could hold a comma; everything between uuid and memory is it.
                name: name.join(", "),
                memory_total_mib: memory.parse().ok(),
            })
        })
        .collect()
}

/// Lines nvidia-smi's GPUs up with the `count` this process sees. nvidia-smi lists
/// every GPU of the host; CUDA numbers only those in `CUDA_VISIBLE_DEVICES` (by index
/// or UUID), in that order. `None` where the two cannot be matched with confidence.
fn match_visible_gpus(rows: &[SmiGpu], visible: Option<&str>, count: i64) -> Option<Vec<GpuInfo>> {
    let chosen: Vec<&SmiGpu> = match visible.map(str::trim) {
        None | Some("") => rows.iter().collect(),
        Some(list) => list
            .split(',')
            .map(str::trim)
            .map(|entry| match entry.parse::<i64>() {
                Ok(index) => rows.iter().find(|row| row.index == index),
                // UUIDs may be abbreviated to any unique prefix.
                Err(_) => {
                    let mut found = rows.iter().filter(|row| row.uuid.starts_with(entry));
                    found.next().filter(|_| found.next().is_none())
                }
            })
            .collect::<Option<Vec<_>>>()?,
    };
    if i64::try_from(chosen.len()).ok()? != count {
        return None;
    }
    Some(
        chosen
            .into_iter()
            .zip(0..)
            .map(|(row, index)| GpuInfo {
                index,
                name: Some(row.name.clone()),
                memory_total_mib: row.memory_total_mib,
            })
            .collect(),
    )
}

impl fmt::Display for DevicesReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.libtorch_version {
            Some(version) => write!(f, "libtorch {version}")?,
            None => write!(f, "libtorch (version unknown)")?,
        }
        match &self.libtorch_cuda_build {
            Some(cuda) => write!(f, ", built for CUDA {cuda}")?,
            None => write!(f, ", CPU-only build")?,
        }
        if let Some(dir) = &self.libtorch_dir {
            write!(f, ", from {}", dir.display())?;
        }
        writeln!(f)?;
        if self.cuda_available {
            write!(f, "CUDA: available, {} GPU(s)", self.device_count)?;
            match (self.cudnn_available, self.cudnn_version) {
                (true, Some(v)) => writeln!(f, ", cuDNN {}", format_cudnn(v))?,
                (true, None) => writeln!(f, ", cuDNN available")?,
                (false, _) => writeln!(f, ", cuDNN not available")?,
            }
        } else if self.cuda_built {
            writeln!(
                f,
                "CUDA: not available (no usable GPU or driver); training runs on the CPU"
            )?;
        } else {
            writeln!(
                f,
                "CUDA: not linked into this build; training runs on the CPU"
            )?;
        }
        for gpu in &self.gpus {
            write!(f, "  cuda:{}", gpu.index)?;
            match &gpu.name {
                Some(name) => write!(f, "  {name}")?,
                None => write!(f, "  (name unknown)")?,
            }
            if let Some(mib) = gpu.memory_total_mib {
                write!(f, "  {:.1} GiB", mib as f64 / 1024.0)?;
            }
            writeln!(f)?;
        }
        if let Some(note) = &self.gpu_details_note {
            writeln!(f, "  ({note})")?;
        }
        Ok(())
    }
}

/// cuDNN numbers its versions `major*10000 + minor*100 + patch` from 9.0 on, and
/// `major*1000 + minor*100 + patch` before.
fn format_cudnn(v: i64) -> String {
    if v >= 90000 {
        format!("{}.{}.{}", v / 10000, v % 10000 / 100, v % 100)
    } else {
        format!("{}.{}.{}", v / 1000, v % 1000 / 100, v % 100)
    }
}

/// A device a worker or a `train` run holds for its whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    Cuda(usize),
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
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

/// What a `--device` value asks for: the one parser of the word ([`FromStr`]) takes
/// `cpu`, `cuda` (= `cuda:0`), `cuda:N` (`gpu`, `gpu:N` alike, any case) and `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRequest {
    Fixed(Device),
    /// The lowest GPU no other worker of this host holds, else the CPU.
    Auto,
}

impl DeviceRequest {
    /// Checks the request against `count` usable GPUs: a GPU that is not there is
    /// refused, with what this host has (`found`, from [`DevicesReport::found`]).
    pub fn check(self, count: i64, found: impl FnOnce() -> String) -> Result<Self, DeviceError> {
        let DeviceRequest::Fixed(Device::Cuda(index)) = self else {
            return Ok(self);
        };
        let given = Device::Cuda(index).to_string();
        if count <= 0 {
            return Err(DeviceError::NoCuda {
                given,
                found: found(),
            });
        }
        if i64::try_from(index).map_or(true, |index| index >= count) {
            return Err(DeviceError::OutOfRange {
                given,
                count,
                found: found(),
            });
        }
        Ok(self)
    }

    /// The device: `Auto` takes the lowest GPU not in `held` (the indices other live
    /// workers of this host hold), or the CPU.
    pub fn resolve(self, held: &[i64], count: i64) -> Device {
        match self {
            DeviceRequest::Fixed(device) => device,
            DeviceRequest::Auto => pick_auto(held, count)
                .and_then(|index| usize::try_from(index).ok())
                .map_or(Device::Cpu, Device::Cuda),
        }
    }
}

impl fmt::Display for DeviceRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeviceRequest::Fixed(device) => device.fmt(f),
            DeviceRequest::Auto => f.write_str("auto"),
        }
    }
}

impl FromStr for DeviceRequest {
    type Err = DeviceError;
    fn from_str(s: &str) -> Result<DeviceRequest, DeviceError> {
        let given = s.trim();
        let lower = given.to_ascii_lowercase();
        let index = match lower.as_str() {
            "cpu" => return Ok(DeviceRequest::Fixed(Device::Cpu)),
            "auto" => return Ok(DeviceRequest::Auto),
            "cuda" | "gpu" => 0,
            other => {
                let Some(index) = other
                    .strip_prefix("cuda:")
                    .or_else(|| other.strip_prefix("gpu:"))
                else {
                    return Err(DeviceError::Unknown {
                        given: given.to_string(),
                    });
                };
                index.parse::<u16>().map_err(|_| DeviceError::BadIndex {
                    given: given.to_string(),
                    index: index.to_string(),
                })?
            }
        };
        Ok(DeviceRequest::Fixed(Device::Cuda(index.into())))
    }
}

/// A `--device` value that cannot be used on this host.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeviceError {
    #[error("device {given:?} is not one of cpu, cuda, cuda:N, auto")]
    Unknown { given: String },
    #[error("device {given:?}: {index:?} is not a GPU index (a whole number from 0)")]
    BadIndex { given: String, index: String },
    #[error(
        "device {given:?} asks for a GPU, but this host has none that libtorch can use: {found}"
    )]
    NoCuda { given: String, found: String },
    #[error(
        "device {given:?}: this host has {count} GPU(s), cuda:0 to cuda:{}: {found}",
        count - 1
    )]
    OutOfRange {
        given: String,
        count: i64,
        found: String,
    },
}

impl DevicesReport {
    /// One line on what this host offers, for a refused `--device`.
    pub fn found(&self) -> String {
        let libtorch = match (&self.libtorch_version, self.cuda_built) {
            (Some(version), true) => format!("libtorch {version} (a CUDA build)"),
            (Some(version), false) => format!("libtorch {version}, a CPU-only build"),
            (None, true) => "libtorch (a CUDA build)".to_owned(),
            (None, false) => "a CPU-only libtorch".to_owned(),
        };
        let gpus = if self.cuda_available {
            let names: Vec<String> = self
                .gpus
                .iter()
                .map(|gpu| match &gpu.name {
                    Some(name) => format!("cuda:{} {name}", gpu.index),
                    None => format!("cuda:{}", gpu.index),
                })
                .collect();
            format!("sees {}", names.join(", "))
        } else if self.cuda_built {
            "sees no GPU (no NVIDIA driver, no GPU, or CUDA_VISIBLE_DEVICES hides them)".to_owned()
        } else {
            "cannot use a GPU".to_owned()
        };
        format!("{libtorch} {gpus}; `sweeper devices` shows the details")
    }
}

/// Parses a `--device` value and checks it against the GPUs this process sees.
pub fn parse_device(s: &str) -> Result<DeviceRequest, DeviceError> {
    s.parse::<DeviceRequest>()?
        .check(usable_gpus(), || describe().found())
}

/// How many GPUs libtorch can use in this process.
pub fn usable_gpus() -> i64 {
    if tch::Cuda::is_available() {
        tch::Cuda::device_count()
    } else {
        0
    }
}

/// The lowest GPU index in `0..count` that no index in `held` names; `None` (train
/// on the CPU) when every GPU is held or there is none.
pub fn pick_auto(held: &[i64], count: i64) -> Option<i64> {
    (0..count.max(0)).find(|index| !held.contains(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(s: &str, count: i64) -> Result<DeviceRequest, DeviceError> {
        s.parse::<DeviceRequest>()?
            .check(count, || "libtorch 2.11.0+cpu, a CPU-only build".into())
    }

    #[test]
    fn parses_every_device_form() {
        let cuda = |index| Ok(DeviceRequest::Fixed(Device::Cuda(index)));
        assert_eq!(request("cpu", 0), Ok(DeviceRequest::Fixed(Device::Cpu)));
        assert_eq!(request(" CPU ", 2), Ok(DeviceRequest::Fixed(Device::Cpu)));
        assert_eq!(request("auto", 0), Ok(DeviceRequest::Auto));
        assert_eq!(request("cuda", 1), cuda(0));
        assert_eq!(request("gpu:1", 2), cuda(1));
        assert_eq!(request("cuda:1", 2), cuda(1));
        assert_eq!(request("CUDA:0", 8), cuda(0));
        assert_eq!(Device::Cuda(3).cuda_visible_devices(), "3");
        assert_eq!(Device::Cpu.cuda_visible_devices(), "");
    }

    #[test]
    fn a_gpu_beyond_the_count_is_refused_naming_the_count_and_what_was_found() {
        let err = request("cuda:3", 2).unwrap_err();
        assert!(
            matches!(err, DeviceError::OutOfRange { count: 2, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("has 2 GPU(s)") && msg.contains("cuda:1") && msg.contains("CPU-only"),
            "{msg}"
        );
    }

    #[test]
    fn a_gpu_without_cuda_and_malformed_values_are_refused() {
        let err = request("cuda", 0).unwrap_err();
        assert!(matches!(err, DeviceError::NoCuda { .. }), "{err:?}");
        assert!(err.to_string().contains("CPU-only"), "{err}");
        assert!(matches!(
            request("cuda:-1", 4),
            Err(DeviceError::BadIndex { .. })
        ));
        assert!(matches!(
            request("cuda:x", 4),
            Err(DeviceError::BadIndex { .. })
        ));
        assert!(matches!(
            request("tpu", 4),
            Err(DeviceError::Unknown { .. })
        ));
        assert!(matches!(request("", 4), Err(DeviceError::Unknown { .. })));
    }

    #[test]
    fn auto_takes_the_lowest_free_gpu_or_the_cpu() {
        assert_eq!(pick_auto(&[], 4), Some(0));
        assert_eq!(pick_auto(&[0, 1], 4), Some(2));
        assert_eq!(pick_auto(&[0, 2], 4), Some(1));
        assert_eq!(pick_auto(&[3, 0, 1, 2], 4), None);
        assert_eq!(pick_auto(&[], 0), None);
        // A held index that no longer exists (fewer GPUs visible now) frees nothing.
        assert_eq!(pick_auto(&[5, 0], 2), Some(1));
        assert_eq!(DeviceRequest::Auto.resolve(&[0], 2), Device::Cuda(1));
        assert_eq!(DeviceRequest::Auto.resolve(&[0, 1], 2), Device::Cpu);
        let one = DeviceRequest::Fixed(Device::Cuda(1));
        assert_eq!(one.resolve(&[1], 2), Device::Cuda(1));
    }

    #[test]
    fn choices_print_as_they_are_parsed() {
        for text in ["cpu", "auto", "cuda:0", "cuda:7"] {
            assert_eq!(request(text, 8).unwrap().to_string(), text);
        }
    }

    #[test]
    fn reads_torch_version_py() {
        let text = "from typing import Optional\n\n__version__ = '2.11.0+cu130'\n\
                    debug = False\ncuda: Optional[str] = '13.0'\ngit_version = 'abc'\n";
        assert_eq!(
            parse_version_py(text),
            TorchVersion {
                version: Some("2.11.0+cu130".into()),
                cuda: Some("13.0".into())
            }
        );
        let cpu = "__version__ = '2.11.0+cpu'\ncuda: Optional[str] = None\n";
        assert_eq!(parse_version_py(cpu).cuda, None);
    }

    #[test]
    fn the_loaded_libtorch_is_the_one_build_rs_linked() {
        // This test binary links libtorch (CUDA half included, by build.rs), so both
        // are in our own memory map, and version.py is the torch wheel's.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let dir = loaded_library_dir(&maps, "libtorch_cpu.so").expect("libtorch_cpu.so is mapped");
        assert!(dir.join("libtorch_cpu.so").exists());
        let report = describe();
        let version = report
            .libtorch_version
            .clone()
            .expect("version.py is readable");
        assert!(version.starts_with("2.11.0"), "{version}");
        assert_eq!(report.libtorch_dir.as_deref(), Some(dir.as_path()));
        assert!(
            report.cuda_built,
            "libtorch_cuda.so is not loaded: {report}"
        );
        assert_eq!(report.cuda_available, tch::Cuda::is_available());
        assert_eq!(report.gpus.len() as i64, report.device_count);
    }

    #[test]
    fn finds_libraries_in_a_memory_map() {
        let maps = "7f00-7f01 r-xp 00000000 08:01 42  /opt/torch/lib/libtorch_cpu.so\n\
                    7f02-7f03 r--p 00000000 08:01 43  /opt/torch/lib/libtorch_cpu.so.bak\n\
                    7f04-7f05 rw-p 00000000 00:00 0 \n";
        assert_eq!(
            loaded_library_dir(maps, "libtorch_cpu.so"),
            Some(PathBuf::from("/opt/torch/lib"))
        );
        assert_eq!(loaded_library_dir(maps, "libtorch_cuda.so"), None);
    }

    /// On a CUDA machine the report lists every visible GPU with nvidia-smi's name and
    /// memory, cuDNN works, and `auto` / `cuda:N` resolve against the real count.
    /// Needs a GPU (`cargo test -- --ignored cuda`): without one it fails, never skips.
    #[test]
    #[ignore = "needs a CUDA device"]
    fn cuda_devices_report_names_every_gpu() {
        let report = describe();
        println!("{report}");
        assert!(report.cuda_available, "no CUDA device:\n{report}");
        assert!(report.device_count >= 1);
        assert_eq!(report.gpus.len() as i64, report.device_count);
        assert_eq!(report.gpu_details_note, None, "{report}");
        for gpu in &report.gpus {
            assert!(
                gpu.name.as_deref().is_some_and(|n| !n.is_empty()),
                "{report}"
            );
            assert!(gpu.memory_total_mib.is_some_and(|m| m > 1024), "{report}");
        }
        assert!(report.cudnn_available, "{report}");
        assert!(report.cudnn_version.is_some_and(|v| v > 0), "{report}");
        assert!(report.libtorch_cuda_build.is_some(), "{report}");

        let count = report.device_count;
        assert_eq!(
            parse_device("cuda"),
            Ok(DeviceRequest::Fixed(Device::Cuda(0)))
        );
        assert!(matches!(
            parse_device(&format!("cuda:{count}")),
            Err(DeviceError::OutOfRange { .. })
        ));
        let device = DeviceRequest::Auto.resolve(&[], count).to_tch();
        assert_eq!(device, tch::Device::Cuda(0));
        let ones = tch::Tensor::ones([4], (tch::Kind::Float, device));
        assert_eq!(ones.sum(tch::Kind::Float).double_value(&[]), 4.0);
    }

    fn smi_rows() -> Vec<SmiGpu> {
        parse_nvidia_smi(
            // The first line as an H200 machine's nvidia-smi printed it.
            "0, GPU-8e582202-54f7-cd67-b694-506a4b0c8a16, NVIDIA H200, 143771\n\
             1, GPU-bbbb2222, NVIDIA A100-SXM4-80GB, 81920\n\
             2, GPU-cccc3333, Tesla V100, Special, [N/A]\n",
        )
        .unwrap()
    }

    #[test]
    fn parses_nvidia_smi_rows() {
        let rows = smi_rows();
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[0].name, "NVIDIA H200");
        assert_eq!(rows[0].memory_total_mib, Some(143771));
        assert_eq!(rows[2].name, "Tesla V100, Special");
        assert_eq!(rows[2].memory_total_mib, None);
        assert!(parse_nvidia_smi("0, only-two").is_err());
        assert!(parse_nvidia_smi("x, GPU-1, name, 10").is_err());
    }

    #[test]
    fn visible_devices_renumber_nvidia_smi_rows() {
        let rows = smi_rows();
        let all = match_visible_gpus(&rows, None, 3).unwrap();
        assert_eq!(all[1].name.as_deref(), Some("NVIDIA A100-SXM4-80GB"));

        let picked = match_visible_gpus(&rows, Some("2,0"), 2).unwrap();
        assert_eq!(picked[0].index, 0);
        assert_eq!(picked[0].name.as_deref(), Some("Tesla V100, Special"));
        assert_eq!(picked[1].name.as_deref(), Some("NVIDIA H200"));

        let by_uuid = match_visible_gpus(&rows, Some("GPU-bbbb"), 1).unwrap();
        assert_eq!(by_uuid[0].index, 0);
        assert_eq!(by_uuid[0].memory_total_mib, Some(81920));

        // Counts that disagree, unknown entries and ambiguous prefixes match nothing.
        assert_eq!(match_visible_gpus(&rows, None, 2), None);
        assert_eq!(match_visible_gpus(&rows, Some("7"), 1), None);
        assert_eq!(match_visible_gpus(&rows, Some("GPU-"), 1), None);
    }

    #[test]
    fn report_prints_each_gpu_with_name_and_memory() {
        let report = DevicesReport {
            libtorch_version: Some("2.11.0+cu130".into()),
            libtorch_cuda_build: Some("13.0".into()),
            libtorch_dir: None,
            cuda_built: true,
            cuda_available: true,
            cudnn_available: true,
            cudnn_version: Some(91002),
            device_count: 2,
            gpus: match_visible_gpus(&smi_rows(), Some("0,1"), 2).unwrap(),
            gpu_details_note: None,
        };
        let text = report.to_string();
        assert!(
            text.starts_with("libtorch 2.11.0+cu130, built for CUDA 13.0\n"),
            "{text}"
        );
        assert!(
            text.contains("CUDA: available, 2 GPU(s), cuDNN 9.10.2"),
            "{text}"
        );
        assert!(text.contains("cuda:0  NVIDIA H200  140.4 GiB"), "{text}");
        assert!(
            text.contains("cuda:1  NVIDIA A100-SXM4-80GB  80.0 GiB"),
            "{text}"
        );
    }

    #[test]
    fn report_on_a_cpu_host_says_training_runs_on_the_cpu() {
        let report = DevicesReport {
            libtorch_version: None,
            libtorch_cuda_build: None,
            libtorch_dir: None,
            cuda_built: true,
            cuda_available: false,
            cudnn_available: false,
            cudnn_version: None,
            device_count: 0,
            gpus: Vec::new(),
            gpu_details_note: None,
        };
        let text = report.to_string();
        assert!(text.contains("version unknown"), "{text}");
        assert!(text.contains("training runs on the CPU"), "{text}");
        assert!(!text.contains("cuda:"), "{text}");
    }
}
