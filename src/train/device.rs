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

/// Runs a step of libtorch work, turning a panic from `tch` into an error: CUDA out
/// of memory is retryable (another attempt, maybe on another device, may fit), every
/// other failure is final.
pub fn guard<T>(what: &str, f: impl FnOnce() -> TrainResult<T>) -> TrainResult<T> {
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "libtorch failed".to_string());
            let first_line = message.lines().next().unwrap_or_default().to_string();
            if message.contains("out of memory") {
                Err(TrainError::Retryable(format!(
                    "{what}: CUDA out of memory ({first_line})"
                )))
            } else {
                Err(TrainError::Fatal(format!("{what}: {first_line}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn a_libtorch_panic_becomes_a_fatal_error_and_oom_a_retryable_one() {
        let err = guard("step", || {
            let a = Tensor::zeros([2, 3], (Kind::Float, Device::Cpu));
            let b = Tensor::zeros([4, 5], (Kind::Float, Device::Cpu));
            Ok(a.matmul(&b))
        })
        .expect_err("shapes do not match");
        assert!(!err.is_retryable(), "{err}");
        assert!(err.to_string().starts_with("step: "));
        let err = guard::<()>("epoch 3", || {
            panic!("CUDA out of memory. Tried to allocate 2.00 GiB")
        })
        .expect_err("panics");
        assert!(err.is_retryable());
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
