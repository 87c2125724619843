//! The backbones against REFERENCE.md's oracles: trainable parameters without the
//! classifier (torchvision / timm, recomputed with PyTorch), feature widths, the
//! smallest input each accepts, and a forward and backward pass at that input.
//!
//! Each test builds its network once on the CPU and uses batches of one or two.

use std::panic::{catch_unwind, AssertUnwindSafe};

use sweeper::train::backbone::{self, Backbone, BACKBONES};
use tch::{nn, Device, Kind, Tensor};

/// One row of REFERENCE.md's backbone table.
struct Oracle {
    name: &'static str,
    with_classifier: i64,
    without_classifier: i64,
    feature_dim: i64,
    default_input: i64,
    min_input: i64,
}

const RESNET18: Oracle = Oracle {
    name: "resnet18",
    with_classifier: 11_689_512,
    without_classifier: 11_176_512,
    feature_dim: 512,
    default_input: 224,
    min_input: 1,
};
const RESNET50: Oracle = Oracle {
    name: "resnet50",
    with_classifier: 25_557_032,
    without_classifier: 23_508_032,
    feature_dim: 2048,
    default_input: 224,
    min_input: 1,
};
const RESNET101: Oracle = Oracle {
    name: "resnet101",
    with_classifier: 44_549_160,
    without_classifier: 42_500_160,
    feature_dim: 2048,
    default_input: 224,
    min_input: 1,
};
const INCEPTION_V3: Oracle = Oracle {
    name: "inception_v3",
    with_classifier: 23_834_568,
    without_classifier: 21_785_568,
    feature_dim: 2048,
    default_input: 299,
    min_input: 75,
};
const INCEPTION_RESNET_V2: Oracle = Oracle {
    name: "inception_resnet_v2",
    with_classifier: 55_843_464,
    without_classifier: 54_306_464,
    feature_dim: 1536,
    default_input: 299,
    min_input: 75,
};

fn images(batch: i64, size: i64) -> Tensor {
    Tensor::randn([batch, 3, size, size], (Kind::Float, Device::Cpu))
}

/// The same values laid out channels-last (NHWC strides behind an NCHW shape).
fn channels_last(xs: &Tensor) -> Tensor {
    xs.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
}

fn trainable_count(store: &nn::VarStore) -> i64 {
    store
        .trainable_variables()
        .iter()
        .map(|t| t.numel() as i64)
        .sum()
}

/// Forward in training mode, backward through a scalar loss; every trainable
/// variable must get a finite gradient and the gradient must not be zero everywhere.
fn assert_trains(store: &nn::VarStore, net: &Backbone, batch: i64, size: i64, feature_dim: i64) {
    for mut variable in store.trainable_variables() {
        variable.zero_grad();
    }
    let features = net.forward_t(&images(batch, size), true);
    assert_eq!(
        features.size(),
        [batch, feature_dim],
        "train-mode features at {size} px"
    );
    features.square().mean(Kind::Float).backward();
    let mut total_norm = 0.0;
    for (name, variable) in store.variables() {
        if !variable.requires_grad() {
            continue;
        }
        let grad = variable.grad();
        assert!(grad.defined(), "{name} got no gradient");
        assert!(
            grad.isfinite().all().int64_value(&[]) == 1,
            "{name} has a non-finite gradient"
        );
        total_norm += grad.square().sum(Kind::Double).double_value(&[]);
    }
    assert!(total_norm > 0.0, "every gradient is zero");
}

/// Eval-mode features for a batch, as given and laid out channels-last: same shape,
/// same values.
fn assert_eval_channels_last(net: &Backbone, batch: i64, size: i64, feature_dim: i64) {
    let xs = images(batch, size);
    let (plain, last) = tch::no_grad(|| {
        (
            net.forward_t(&xs, false),
            net.forward_t(&channels_last(&xs), false),
        )
    });
    assert_eq!(
        plain.size(),
        [batch, feature_dim],
        "eval features at {size} px"
    );
    assert_eq!(last.size(), [batch, feature_dim]);
    assert!(plain.isfinite().all().int64_value(&[]) == 1);
    let gap = (&plain - &last).abs().max().double_value(&[]);
    let scale = plain.abs().max().double_value(&[]).max(1e-6);
    assert!(
        gap <= 1e-4 * scale,
        "channels-last differs by {gap} (scale {scale})"
    );
}

/// Builds the backbone once and checks it against its oracle.
fn check_against_oracle(oracle: &Oracle, variable_names: &[&str]) -> (nn::VarStore, Backbone) {
    let info = backbone::info(oracle.name).unwrap();
    assert_eq!(info.feature_dim, oracle.feature_dim);
    assert_eq!(info.default_input, oracle.default_input);
    assert_eq!(info.min_input, oracle.min_input);
    // The classifier the reference adds is a 1000-way linear layer with bias.
    let classifier = oracle.feature_dim * 1000 + 1000;
    assert_eq!(
        oracle.without_classifier + classifier,
        oracle.with_classifier
    );

    let store = nn::VarStore::new(Device::Cpu);
    let net = backbone::build(oracle.name, &store.root()).unwrap();
    assert_eq!(
        trainable_count(&store),
        oracle.without_classifier,
        "{}",
        oracle.name
    );
    let variables = store.variables();
    for name in variable_names {
        assert!(
            variables.contains_key(*name),
            "{} has no variable {name}",
            oracle.name
        );
    }
    (store, net)
}

/// A forward pass that panics inside libtorch, caught (eval mode, batch 1).
/// Trains a ResNet at 1 px, where every map is 1×1 and batch norm sees only the
/// batch: 16 values per channel keep the gradients sane (with 2 they overflow in
/// ResNet-101, see `BackboneInfo::min_input`). Then a batch of 2 at 64 px, where the
/// last stage's 2×2 maps give batch norm 8 values per channel.
fn assert_resnet_trains(store: &nn::VarStore, net: &Backbone, feature_dim: i64) {
    assert_trains(store, net, 16, 1, feature_dim);
    assert_trains(store, net, 2, 64, feature_dim);
}

fn forward_fails(net: &Backbone, size: i64) -> bool {
    let xs = images(1, size);
    catch_unwind(AssertUnwindSafe(|| {
        tch::no_grad(|| net.forward_t(&xs, false))
    }))
    .is_err()
}

#[test]
fn resnet18_matches_torchvision() {
    let names = [
        "conv1.weight",
        "layer4.1.conv2.weight",
        "layer2.0.downsample.1.bias",
    ];
    let (store, net) = check_against_oracle(&RESNET18, &names);
    assert_resnet_trains(&store, &net, 512);
    assert_eval_channels_last(&net, 1, 1, 512);
    assert_eval_channels_last(&net, 2, 32, 512);
    assert_eq!(
        backbone::trainable_parameters("resnet18").unwrap(),
        RESNET18.without_classifier
    );
}

#[test]
fn resnet50_matches_torchvision() {
    let names = [
        "layer1.0.conv3.weight",
        "layer4.2.bn3.running_var",
        "layer3.5.bn2.weight",
    ];
    let (store, net) = check_against_oracle(&RESNET50, &names);
    assert_resnet_trains(&store, &net, 2048);
    assert_eval_channels_last(&net, 1, 1, 2048);
    assert_eval_channels_last(&net, 2, 32, 2048);
}

#[test]
fn resnet101_matches_torchvision() {
    let names = ["layer3.22.conv3.weight", "layer4.0.downsample.0.weight"];
    let (store, net) = check_against_oracle(&RESNET101, &names);
    assert_resnet_trains(&store, &net, 2048);
    assert_eval_channels_last(&net, 1, 1, 2048);
}

#[test]
fn inception_v3_matches_torchvision_without_aux_branch() {
    let names = [
        "Conv2d_1a_3x3.conv.weight",
        "Mixed_6e.branch7x7dbl_5.bn.bias",
        "Mixed_7c.branch3x3dbl_3b.conv.weight",
    ];
    let (store, net) = check_against_oracle(&INCEPTION_V3, &names);
    assert!(!store
        .variables()
        .keys()
        .any(|name| name.starts_with("AuxLogits")));
    assert_trains(&store, &net, 2, 75, 2048);
    assert_eval_channels_last(&net, 1, 75, 2048);
    // 75 px is the true minimum: one pixel less and Mixed_7a has nothing to reduce.
    assert!(forward_fails(&net, 74), "inception_v3 ran at 74 px");
}

#[test]
fn inception_resnet_v2_matches_timm() {
    let names = [
        "mixed_5b.branch3.1.conv.weight",
        "repeat.9.conv2d.bias",
        "repeat_1.19.branch1.2.conv.weight",
        "repeat_2.8.conv2d.weight",
        "block8.conv2d.weight",
        "conv2d_7b.bn.running_mean",
    ];
    let (store, net) = check_against_oracle(&INCEPTION_RESNET_V2, &names);
    assert!(
        !store.variables().contains_key("repeat_2.9.conv2d.weight"),
        "one Block8 too many"
    );
    assert_trains(&store, &net, 2, 75, 1536);
    assert_eval_channels_last(&net, 1, 75, 1536);
    assert!(forward_fails(&net, 74), "inception_resnet_v2 ran at 74 px");
}

#[test]
fn small_resnet_trains_at_its_default_and_smallest_inputs() {
    let info = backbone::info("small_resnet").unwrap();
    assert_eq!((info.default_input, info.min_input), (32, 1));
    let store = nn::VarStore::new(Device::Cpu);
    let net = backbone::build("small_resnet", &store.root()).unwrap();
    assert_trains(&store, &net, 2, 32, info.feature_dim);
    assert_trains(&store, &net, 2, 1, info.feature_dim);
    assert_eval_channels_last(&net, 2, 32, info.feature_dim);
    assert_eval_channels_last(&net, 1, 1, info.feature_dim);
    // A 64 px image (the top of its intended range) runs too.
    assert_eval_channels_last(&net, 1, 64, info.feature_dim);
}

#[test]
fn inception_below_its_minimum_is_refused_before_training() {
    for name in ["inception_v3", "inception_resnet_v2"] {
        let error = backbone::check_input(name, 64).unwrap_err();
        assert!(!error.is_infrastructure(), "a too-small input is final");
        let message = error.to_string();
        assert!(message.contains(name), "{message}");
        assert!(message.contains("75 px"), "{message}");
        assert!(message.contains("64 px"), "{message}");
        assert!(backbone::check_input(name, 75).is_ok());
    }
    assert!(backbone::check_input("resnet50", 1).is_ok());
    assert!(backbone::check_input("no_such_net", 224).is_err());
}

#[test]
fn models_table_lists_every_backbone_with_reference_counts() {
    let table = backbone::models_table();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), BACKBONES.len() + 1, "{table}");
    for (oracle, count) in [
        (&RESNET18, "11,176,512"),
        (&RESNET50, "23,508,032"),
        (&RESNET101, "42,500,160"),
        (&INCEPTION_V3, "21,785,568"),
        (&INCEPTION_RESNET_V2, "54,306,464"),
    ] {
        let row = lines
            .iter()
            .find(|line| line.split_whitespace().next() == Some(oracle.name))
            .unwrap_or_else(|| panic!("no row for {}:\n{table}", oracle.name));
        assert!(row.contains(count), "{row}");
        assert!(row.contains(&format!("{} px", oracle.min_input)), "{row}");
        assert!(
            row.contains(&format!("{} px", oracle.default_input)),
            "{row}"
        );
    }
    assert!(
        lines.iter().any(|line| line.starts_with("small_resnet")),
        "{table}"
    );
}

/// On a machine with CUDA: the same weights give the same eval-mode features on the
/// GPU as on the CPU (TF32 convolutions allow a small gap), and a training step on
/// the GPU gives finite gradients. Without CUDA there is nothing to compare.
/// Needs a GPU: run by `scripts/gpu-check.sh` (`cargo test -- --ignored cuda`), where
/// a missing CUDA device is a failure, not a skip.
#[test]
#[ignore = "needs a CUDA device; scripts/gpu-check.sh runs it"]
fn cuda_features_match_cpu() {
    assert!(
        tch::Cuda::is_available(),
        "cuda_features_match_cpu needs a CUDA device"
    );
    let gpu = Device::Cuda(0);
    for info in BACKBONES {
        let size = info.min_input.max(64);
        let cpu_store = nn::VarStore::new(Device::Cpu);
        let cpu_net = backbone::build(info.name, &cpu_store.root()).unwrap();
        let mut gpu_store = nn::VarStore::new(gpu);
        let gpu_net = backbone::build(info.name, &gpu_store.root()).unwrap();
        gpu_store.copy(&cpu_store).unwrap();

        let xs = images(2, size);
        let (on_cpu, on_gpu) = tch::no_grad(|| {
            (
                cpu_net.forward_t(&xs, false),
                gpu_net.forward_t(&xs.to_device(gpu), false),
            )
        });
        let on_gpu = on_gpu.to_device(Device::Cpu);
        let gap = (&on_cpu - &on_gpu).abs().max().double_value(&[]);
        let scale = on_cpu.abs().max().double_value(&[]).max(1e-6);
        assert!(
            gap <= 1e-2 * scale,
            "{}: GPU differs by {gap} (scale {scale})",
            info.name
        );

        let features = gpu_net.forward_t(&images(8, size).to_device(gpu), true);
        features.square().mean(Kind::Float).backward();
        for variable in gpu_store.trainable_variables() {
            assert!(
                variable.grad().isfinite().all().int64_value(&[]) == 1,
                "{}",
                info.name
            );
        }
    }
}
