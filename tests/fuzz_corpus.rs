//! The fuzz targets' inputs on stable, in every test run: the committed corpus and regression
//! inputs (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`), and a seeded mutation run
//! over valid records (bit flips, truncations, inflated lengths) of a table with every column
//! kind. None may panic, and each must finish quickly (no hang, no allocation the size of a
//! declared length).
use std::path::Path;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rtis::fuzzing;

fn replay(dir: &Path, f: fn(&[u8])) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut n = 0;
    for e in entries {
        let path = e.unwrap().path();
        let data = std::fs::read(&path).unwrap();
        let t0 = Instant::now();
        f(&data);
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "{} took {:?}",
            path.display(),
            t0.elapsed()
        );
        n += 1;
    }
    n
}

#[test]
fn the_committed_corpus_and_regressions_replay_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut total = 0;
    for (target, f) in [
        ("consumer_decode", fuzzing::consumer_decode as fn(&[u8])),
        ("binlog_bytes", fuzzing::binlog_bytes as fn(&[u8])),
    ] {
        for kind in ["corpus", "regressions"] {
            total += replay(&root.join(kind).join(target), f);
        }
    }
    assert!(total > 0, "no corpus under {}", root.display());
}

/// Mutations of `seed`: one byte flipped, cut short, a byte set to a large varint.
fn mutate(rng: &mut StdRng, seed: &[u8]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..rng.random_range(1..4) {
        if v.len() < 2 {
            break;
        }
        let i = rng.random_range(1..v.len());
        match rng.random_range(0..4) {
            0 => v[i] ^= 1 << rng.random_range(0..8),
            1 => v.truncate(i),
            2 => {
                // a length or count that claims far more than follows
                v.splice(i..i, [0xfe, 0xff, 0xff, 0xff, 0x0f]);
            }
            _ => v[i] = rng.random(),
        }
    }
    v
}

#[test]
fn mutated_valid_records_never_panic() {
    let seeds = fuzzing::valid_inputs();
    assert!(seeds.len() >= 4);
    let mut rng = StdRng::seed_from_u64(0x5eed_f422);
    let t0 = Instant::now();
    for round in 0..20_000 {
        let (target, seed) = &seeds[round % seeds.len()];
        let input = mutate(&mut rng, seed);
        let one = Instant::now();
        match *target {
            "consumer_decode" => fuzzing::consumer_decode(&input),
            _ => fuzzing::binlog_bytes(&input),
        }
        assert!(
            one.elapsed() < Duration::from_secs(2),
            "{target} input {input:02x?} took {:?}",
            one.elapsed()
        );
    }
    eprintln!("20000 mutated inputs in {:?}", t0.elapsed());
}
