//! Forward pass of the Keras ResNet-50 up to each block, at batch 1 and 8, on the default
//! device (flex). Threads: flex uses rayon's global pool, so `RAYON_NUM_THREADS=2 cargo bench`
//! fixes the count. Throughput is reported in images per second ("elem/s"). The engine is the
//! default one; `ATTREX_ISA=avx2` (or `avx512`) forces the native engine with that instruction
//! set, `ATTREX_ISA=burn` Burn's engine. `ATTREX_ENGINE`, which the examples read, works too
//! (when both are set they must agree).
//!
//! Needs the weights (`weights/fetch.sh`); the input is random, which costs the same as a photo.

use std::sync::Arc;

use attrex::burn::tensor::{Distribution, Tensor};
use attrex::{Backbone, Block, BlockTap, Engine, Isa};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn forward(c: &mut Criterion) {
    let device = attrex::default_device().expect("default device");
    let mut builder = Backbone::builder().device(device.clone());
    let var = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
    let name = match (var("ATTREX_ISA"), var("ATTREX_ENGINE")) {
        (Some(isa), Some(engine)) if isa != engine => {
            panic!("ATTREX_ISA={isa:?} and ATTREX_ENGINE={engine:?} name different engines")
        }
        (isa, engine) => isa.or(engine),
    };
    if let Some(name) = name.filter(|n| n != "auto") {
        builder = builder.engine(match Isa::from_name(&name) {
            Some(isa) => Engine::Native(isa),
            None if name == "burn" => Engine::Burn,
            None => panic!("ATTREX_ISA: avx512, avx2 or burn, not {name:?}"),
        });
    }
    let backbone = Arc::new(builder.build().expect("run weights/fetch.sh first"));
    eprintln!("engine {}", backbone.engine());
    let mut group = c.benchmark_group("forward");
    group.sample_size(10);
    for batch in [1usize, 8] {
        let input = Tensor::<4>::random(
            [batch, 3, 224, 224],
            Distribution::Normal(0.0, 50.0),
            &device,
        );
        group.throughput(Throughput::Elements(batch as u64));
        for block in Block::ALL {
            // Up to `block`, pooling every block on the way, as the `all five taps` figure does.
            let blocks: Vec<Block> = Block::ALL.into_iter().filter(|b| *b <= block).collect();
            let tap = BlockTap::new(backbone.clone(), &blocks).unwrap();
            group.bench_with_input(
                BenchmarkId::new(format!("upto_{block}"), format!("batch{batch}")),
                &input,
                |b, x| {
                    b.iter(|| {
                        let pooled = tap.forward(x.clone()).unwrap();
                        // Read back to the host so lazy backends finish the work inside the timer.
                        pooled
                            .into_iter()
                            .map(|t| t.into_data().num_elements())
                            .sum::<usize>()
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, forward);
criterion_main!(benches);
