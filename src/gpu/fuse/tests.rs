use super::*;
use crate::format::loader::SourceFormat;

fn t(values: &[f32], shape: (usize, usize)) -> Tensor {
    Tensor::from_vec(values.to_vec(), shape, &Device::Cpu).unwrap()
}

fn module(kind: ModuleKind, roles: &[&str]) -> ModuleInfo {
    ModuleInfo {
        module: "m".into(),
        base_tensor: "m.weight".into(),
        kind,
        layer: None,
        rank: Some(1),
        alpha: Some(2.0),
        scale: Some(2.0),
        use_rslora: false,
        fan_in_fan_out: false,
        feedforward: false,
        tensors: roles
            .iter()
            .map(|r| (r.to_string(), format!("m.{r}")))
            .collect(),
    }
}

fn adapter(module: &ModuleInfo, tensors: Vec<(&str, Tensor)>) -> AdapterWeights {
    AdapterWeights {
        modules: vec![module.clone()],
        tensors: tensors
            .into_iter()
            .map(|(r, t)| (format!("m.{r}"), t))
            .collect(),
        osd: Default::default(),
        soft_prompt: None,
        device: Device::Cpu,
        format: SourceFormat::Binary,
        warnings: Vec::new(),
    }
}

fn values(t: &Tensor) -> Vec<Vec<f32>> {
    t.to_vec2().unwrap()
}

/// Both paths, which must agree bit for bit on these small cases.
fn fuse_module(
    adapter: &AdapterWeights,
    module: &ModuleInfo,
    weight: &Tensor,
    bias: Option<&Tensor>,
) -> Result<Fused> {
    let host = fuse_module_host(adapter, module, weight, bias);
    let candle = fuse_module_candle(adapter, module, weight, bias);
    match (&host, &candle) {
        (Ok(h), Ok(c)) => {
            let hw: Vec<f32> = h
                .weight
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let cw: Vec<f32> = c
                .weight
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(hw, cw, "host and candle paths disagree");
            assert_eq!(h.weight.dtype(), c.weight.dtype());
            assert_eq!(h.bias.is_some(), c.bias.is_some());
        }
        (Err(_), Err(_)) => {}
        _ => panic!(
            "one path failed: host {:?} candle {:?}",
            host.is_ok(),
            candle.is_ok()
        ),
    }
    host
}

#[test]
fn embedding_delta_is_the_transpose_of_b_a() {
    // A [r=1, num_embeddings=3], B [dim=2, r=1]: Δ = s·(B·A)ᵀ is [3, 2].
    let m = module(ModuleKind::LoraEmbedding, &["embedding_A", "embedding_B"]);
    let a = adapter(
        &m,
        vec![
            ("embedding_A", t(&[1.0, 2.0, 3.0], (1, 3))),
            ("embedding_B", t(&[10.0, 100.0], (2, 1))),
        ],
    );
    let w = t(&[0.0; 6], (3, 2));
    let fused = fuse_module(&a, &m, &w, None).unwrap();
    assert_eq!(
        values(&fused.weight),
        vec![vec![20.0, 200.0], vec![40.0, 400.0], vec![60.0, 600.0]]
    );
}

#[test]
fn fan_in_fan_out_transposes_the_delta() {
    // Base stored [in=3, out=2]; B·A is [out, in].
    let mut m = module(ModuleKind::Lora, &["A", "B"]);
    m.fan_in_fan_out = true;
    let a = adapter(
        &m,
        vec![
            ("A", t(&[1.0, 2.0, 3.0], (1, 3))),
            ("B", t(&[1.0, -1.0], (2, 1))),
        ],
    );
    let w = t(&[1.0; 6], (3, 2));
    let fused = fuse_module(&a, &m, &w, None).unwrap();
    assert_eq!(
        values(&fused.weight),
        vec![vec![3.0, -1.0], vec![5.0, -3.0], vec![7.0, -5.0]]
    );
    // Without the flag the shapes disagree: a clear error.
    m.fan_in_fan_out = false;
    let err = fuse_module(&a, &m, &w, None).unwrap_err().to_string();
    assert!(err.contains("shape"), "{err}");
}

#[test]
fn ia3_scales_rows_and_bias_or_columns() {
    let mut m = module(ModuleKind::Ia3, &["ia3"]);
    let w = t(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], (2, 3));
    let bias = Tensor::from_vec(vec![1.0f32, 1.0], 2, &Device::Cpu).unwrap();
    // Not feed-forward: l [out=2, 1] scales rows and the bias.
    let a = adapter(&m, vec![("ia3", t(&[2.0, 3.0], (2, 1)))]);
    let fused = fuse_module(&a, &m, &w, Some(&bias)).unwrap();
    assert_eq!(
        values(&fused.weight),
        vec![vec![2.0, 4.0, 6.0], vec![12.0, 15.0, 18.0]]
    );
    assert_eq!(
        fused.bias.unwrap().to_vec1::<f32>().unwrap(),
        vec![2.0, 3.0]
    );
    // Feed-forward: l [1, in=3] scales columns, bias untouched.
    m.feedforward = true;
    let a = adapter(&m, vec![("ia3", t(&[1.0, 0.0, -1.0], (1, 3)))]);
    let fused = fuse_module(&a, &m, &w, Some(&bias)).unwrap();
    assert_eq!(
        values(&fused.weight),
        vec![vec![1.0, 0.0, -3.0], vec![4.0, 0.0, -6.0]]
    );
    assert!(fused.bias.is_none());
}

#[test]
fn dora_normalises_rows_to_the_magnitude() {
    let m = module(ModuleKind::Dora, &["A", "B", "magnitude"]);
    let a = adapter(
        &m,
        vec![
            ("A", t(&[0.0, 0.0], (1, 2))),
            ("B", t(&[0.0, 0.0], (2, 1))),
            ("magnitude", t(&[10.0, 1.0], (1, 2))),
        ],
    );
    let w = t(&[3.0, 4.0, 0.0, 2.0], (2, 2));
    let fused = fuse_module(&a, &m, &w, None).unwrap();
    assert_eq!(values(&fused.weight), vec![vec![6.0, 8.0], vec![0.0, 1.0]]);
}

#[test]
fn half_precision_bases_are_computed_in_f32_and_cast_back() {
    let m = module(ModuleKind::Lora, &["A", "B"]);
    let a = adapter(
        &m,
        vec![
            ("A", t(&[1.0, 1.0], (1, 2))),
            ("B", t(&[0.25, 0.5], (2, 1))),
        ],
    );
    let w = t(&[1.0, 2.0, 3.0, 4.0], (2, 2))
        .to_dtype(DType::BF16)
        .unwrap();
    let fused = fuse_module(&a, &m, &w, None).unwrap();
    assert_eq!(fused.weight.dtype(), DType::BF16);
    let back: Vec<Vec<f32>> = fused
        .weight
        .to_dtype(DType::F32)
        .unwrap()
        .to_vec2()
        .unwrap();
    assert_eq!(back, vec![vec![1.5, 2.5], vec![4.0, 5.0]]);
}
