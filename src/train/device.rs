//! Device specifics: bf16 autocast and channels-last on CUDA, and turning libtorch's
//! failures (which `tch` raises as panics) into [`TrainError`]s the queue can act on.

use std::panic::{self, AssertUnwindSafe};

use tch::nn::VarStore;
use tch::{Device, Tensor};

use super::{TrainError, TrainResult};

// tch 0.24 turns autocast on but cannot choose its precision, and CUDA autocast
// defaults to float16. libtorch exports the setter; both enums are `int8_t`-backed, so
// the C calling convention passes them as plain bytes.
extern "C" {
    #[link_name = "_ZN2at8autocast18set_autocast_dtypeEN3c1010DeviceTypeENS1_10ScalarTypeE"]
    fn at_set_autocast_dtype(device_type: i8, scalar_type: i8);
    #[link_name = "_ZN2at8autocast18get_autocast_dtypeEN3c1010DeviceTypeE"]
    fn at_get_autocast_dtype(device_type: i8) -> i8;
}

/// `c10::DeviceType::CUDA`.
const DEVICE_TYPE_CUDA: i8 = 1;
/// `c10::ScalarType::BFloat16`.
const SCALAR_TYPE_BF16: i8 = 15;

/// Makes CUDA autocast compute in bfloat16 on this thread. libtorch keeps the autocast
/// dtype per thread, and every job trains on a thread of its own, so this runs before
/// each autocast region rather than once per process.
pub fn use_bf16_autocast() {
    // SAFETY: a plain setter of libtorch's thread-local autocast state.
    unsafe { at_set_autocast_dtype(DEVICE_TYPE_CUDA, SCALAR_TYPE_BF16) }
}

/// Whether CUDA autocast computes in bfloat16.
pub fn autocast_is_bf16() -> bool {
    // SAFETY: a plain getter of a global in libtorch.
    unsafe { at_get_autocast_dtype(DEVICE_TYPE_CUDA) == SCALAR_TYPE_BF16 }
}

/// Runs `f` under bf16 autocast on CUDA, plainly elsewhere.
pub fn autocast<T>(device: Device, f: impl FnOnce() -> T) -> T {
    if device.is_cuda() {
        use_bf16_autocast();
        tch::autocast(true, f)
    } else {
        f()
    }
}

/// The same values in channels-last layout (NHWC strides) on CUDA, where cuDNN's
/// convolutions are faster with it; unchanged elsewhere.
pub fn channels_last(x: &Tensor, device: Device) -> Tensor {
    if device.is_cuda() && x.dim() == 4 {
        x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
    } else {
        x.shallow_clone()
    }
}

/// Moves every 4-D weight of `vs` to channels-last layout on CUDA.
pub fn channels_last_weights(vs: &VarStore) {
    let device = vs.device();
    if !device.is_cuda() {
        return;
    }
    tch::no_grad(|| {
        for (_, mut var) in vs.variables() {
            if var.dim() == 4 {
                let relaid = channels_last(&var, device);
                var.set_data(&relaid);
            }
        }
    });
}

/// Runs a step of libtorch work, turning a panic from `tch` into an error whose
/// variant says whose fault it was ([`classify_panic`]), its message cut to what a
/// user needs ([`cut_panic_message`]) and prefixed with `what`.
pub fn guard<T>(what: &str, f: impl FnOnce() -> TrainResult<T>) -> TrainResult<T> {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => Err(panic_error(what, payload.as_ref())),
    }
}

/// Keeps a training thread's panic out of stderr: the failure it becomes carries the
/// cut message, and libtorch's thousands of characters of C++ frames help no user
/// (they stay in the log at debug level). Other threads' panics print as usual.
pub fn quiet_training_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let default = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let training = std::thread::current()
                .name()
                .is_some_and(|name| name.starts_with("train-"));
            if !training {
                return default(info);
            }
            let payload = info.payload();
            let raw = payload
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| payload.downcast_ref::<&str>().copied())
                .unwrap_or("libtorch failed");
            tracing::debug!(
                location = %info.location().map(ToString::to_string).unwrap_or_default(),
                message = %cut_panic_message(raw),
                full = raw,
                "a training thread panicked"
            );
        }));
    });
}

/// A caught panic's payload as a [`TrainError`].
pub fn panic_error(what: &str, payload: &(dyn std::any::Any + Send)) -> TrainError {
    let raw = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("libtorch failed");
    classify_panic(format!("{what}: {}", cut_panic_message(raw)))
}

/// The part of a libtorch panic a user needs: the error's own text, without the
/// `unwrap` wrapper, the escaped quoting, the C++ frames and the "Exception raised
/// from" trailer, cut to at most [`MESSAGE_MAX`] characters.
pub fn cut_panic_message(raw: &str) -> String {
    let mut text = raw;
    if let Some(at) = text.find("Torch(\"") {
        text = &text[at + "Torch(\"".len()..];
        text = text.strip_suffix("\")").unwrap_or(text);
    }
    let text = text.replace("\\n", "\n").replace("\\\"", "\"");
    let kept: Vec<&str> = text
        .lines()
        .map(str::trim_end)
        .take_while(|line| {
            !line.starts_with("Exception raised from") && !line.trim_start().starts_with("frame #")
        })
        .filter(|line| !line.is_empty())
        .collect();
    let joined = kept.join(" ");
    let joined = if joined.is_empty() {
        raw.lines().next().unwrap_or_default().to_owned()
    } else {
        joined
    };
    match joined.char_indices().nth(MESSAGE_MAX) {
        Some((at, _)) => format!("{}…", &joined[..at]),
        None => joined,
    }
}

/// The longest message [`cut_panic_message`] keeps.
pub const MESSAGE_MAX: usize = 400;

/// A libtorch failure as the error whose variant says whose fault it was: the
/// device's (CUDA, its driver, cuDNN, NCCL), memory's, or else the job's.
pub fn classify_panic(message: String) -> TrainError {
    let lower = message.to_ascii_lowercase();
    if lower.contains("out of memory") || lower.contains("not enough memory") {
        TrainError::OutOfMemory(message)
    } else if [
        "cuda error",
        "cuda driver",
        "nvidia driver",
        "cudnn_status",
        "cudnn error",
        "cublas_status",
        "nccl error",
        "no cuda gpus are available",
        "cuda is not available",
        "device-side assert",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
    {
        TrainError::Device(message)
    } else {
        TrainError::Fatal(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn a_libtorch_panic_becomes_an_error_blamed_on_the_job_or_the_device() {
        let err = guard("step", || {
            let a = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
            let b = Tensor::zeros([4, 5], (Kind::Float, Device::Cpu));
            Ok(a.matmul(&b))
        })
        .expect_err("shapes do not match");
        assert!(matches!(err, TrainError::Fatal(_)), "{err:?}");
        let message = err.to_string();
        assert!(message.starts_with("step: "), "{message}");
        assert!(!message.contains("frame #"), "{message}");
        assert!(message.chars().count() <= MESSAGE_MAX + "step: ".len() + 1);
        let err = guard::<()>("epoch 3", || {
            panic!("CUDA out of memory. Tried to allocate 2.00 GiB")
        })
        .expect_err("panics");
        assert!(matches!(err, TrainError::OutOfMemory(_)), "{err:?}");
        assert!(err.is_infrastructure());
    }

    /// The message a worker on a host without a driver used to store, 5,000
    /// characters of it; what a user needs is its first sentence.
    #[test]
    fn a_libtorch_panic_is_cut_to_its_own_text() {
        let mut raw = String::from(
            "called `Result::unwrap()` on an `Err` value: Torch(\"Found no NVIDIA driver on \
             your system. Please check that you have an NVIDIA GPU and installed a driver \
             from http://www.nvidia.com/Download/index.aspx\\nException raised from \
             _check_driver at /pytorch/aten/src/ATen/cuda/detail/LazyCUDAHooks.cpp:76 \
             (most recent call first):\\n",
        );
        for frame in 0..60 {
            raw.push_str(&format!(
                "frame #{frame}: c10::Error::Error(c10::SourceLocation, std::string) + 0x98 \
                 (0x7f00 in /venv/lib/python3.12/site-packages/torch/lib/libc10.so)\\n"
            ));
        }
        raw.push_str("\")");
        assert!(raw.len() > 5_000);
        let cut = cut_panic_message(&raw);
        assert_eq!(
            cut,
            "Found no NVIDIA driver on your system. Please check that you have an NVIDIA \
             GPU and installed a driver from http://www.nvidia.com/Download/index.aspx"
        );
        assert!(matches!(classify_panic(cut), TrainError::Device(_)));
    }

    #[test]
    fn a_long_message_is_cut_at_a_character_boundary() {
        let cut = cut_panic_message(&"é".repeat(1_000));
        assert_eq!(cut.chars().count(), MESSAGE_MAX + 1);
        assert!(cut.ends_with('…'));
    }

    #[test]
    fn panics_are_blamed_on_the_device_memory_or_the_job() {
        for (message, kind) in [
            (
                "CUDA out of memory. Tried to allocate 2.00 GiB",
                "out of memory",
            ),
            (
                "DefaultCPUAllocator: not enough memory: you tried to allocate 1 bytes",
                "out of memory",
            ),
            (
                "CUDA error: an illegal memory access was encountered",
                "device",
            ),
            ("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR", "device"),
            (
                "mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)",
                "job",
            ),
        ] {
            let blamed = match classify_panic(message.to_owned()) {
                TrainError::OutOfMemory(_) => "out of memory",
                TrainError::Device(_) => "device",
                _ => "job",
            };
            assert_eq!(blamed, kind, "{message}");
        }
    }

    #[test]
    fn autocast_dtype_can_be_set_to_bf16() {
        use_bf16_autocast();
        assert!(autocast_is_bf16());
    }

    #[test]
    fn channels_last_keeps_values() {
        let x = Tensor::randn([2, 3, 4, 5], (Kind::Float, Device::Cpu));
        let y = x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2]);
        assert!(x.equal(&y));
        assert_eq!(y.stride(), [60, 1, 15, 3]);
    }
}
