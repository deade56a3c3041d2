//! Client-side subsetting, gRFC A68 ("random subsetting with rendezvous hashing"): each client
//! connects to `subset_size` of the instances rather than to all of them. A client draws one
//! random seed for its lifetime; every instance's address is hashed with that seed, and the
//! `subset_size` instances with the lowest hashes are the subset.
//!
//! An address's hash depends only on the seed and the address, never on the other instances,
//! so the order among the instances that stay is stable (rendezvous hashing): an instance added
//! to or removed from the list changes each client's subset by at most one member, and only for
//! the clients whose subset it enters or leaves. Across clients the seeds differ, so every
//! instance is equally likely to be in any client's subset; how even the connection counts come
//! out depends on clients x subset_size / instances (the tests give figures).
//!
//! The hash is XXH64, the one A68 suggests (and A42's ring_hash uses), written out here
//! rather than taken as a dependency: it is about thirty lines and is checked against the
//! published test vectors. Seeds are private to each client, so no other client ever needs our
//! hash values and interoperating on them is moot; what matters is that the hash is uniform
//! and that each seed orders the instances independently, which XXH64 is known for (it passes
//! SMHasher) and the tests check against the binomial spread that ideal random subsets give.

/// gRFC A68 random subsetting: which `size` of the given endpoints this client connects to.
#[derive(Clone, Debug)]
pub struct Subsetter {
    seed: u64,
    size: usize,
}

impl Subsetter {
    /// `size` >= 1. A fresh random seed (fastrand is a dependency already).
    pub fn new(size: usize) -> Subsetter {
        Subsetter::with_seed(size, fastrand::u64(..))
    }

    /// A fixed seed: the same seed and the same set of addresses always give the same subset.
    ///
    /// # Panics
    ///
    /// When `size` is 0: A68's `subset_size` must be greater than 0, which the config rejects
    /// before a subsetter is made.
    pub fn with_seed(size: usize, seed: u64) -> Subsetter {
        assert!(size > 0, "subset size must be at least 1");
        Subsetter { seed, size }
    }

    /// How many instances a subset holds (fewer only when there are fewer instances).
    pub fn size(&self) -> usize {
        self.size
    }

    /// Indices into `addrs` of the chosen subset, in hash order as A68 hands them to the child
    /// policy (so a pick_first child uses each client's first-ranked instance, spread over the
    /// instances, not the resolver's first). All of them when addrs.len() <= size. A duplicated address
    /// hashes alike, so its copies are chosen together or not at all (as far as `size` allows).
    /// Linear on average: one hash per address, a partition, and a sort of the subset.
    pub fn select(&self, addrs: &[&str]) -> Vec<usize> {
        if addrs.len() <= self.size {
            return (0..addrs.len()).collect();
        }
        let mut ranked: Vec<(u64, usize)> = addrs
            .iter()
            .enumerate()
            .map(|(i, addr)| (xxh64(addr.as_bytes(), self.seed), i))
            .collect();
        // Equal hashes of distinct addresses (odds 2^-64 a pair) break by address, so the
        // subset depends on the set of addresses alone, not on the order they came in.
        ranked.select_nth_unstable_by(self.size - 1, |a, b| {
            (a.0, addrs[a.1]).cmp(&(b.0, addrs[b.1]))
        });
        let chosen = &mut ranked[..self.size];
        chosen.sort_unstable_by(|a, b| (a.0, addrs[a.1]).cmp(&(b.0, addrs[b.1])));
        chosen.iter().map(|&(_, i)| i).collect()
    }
}

const P1: u64 = 0x9E37_79B1_85EB_CA87;
const P2: u64 = 0xC2B2_AE3D_27D4_EB4F;
const P3: u64 = 0x1656_67B1_9E37_79F9;
const P4: u64 = 0x85EB_CA77_C2B2_AE63;
const P5: u64 = 0x27D4_EB2F_1656_67C5;

fn xxh64_round(acc: u64, lane: u64) -> u64 {
    acc.wrapping_add(lane.wrapping_mul(P2))
        .rotate_left(31)
        .wrapping_mul(P1)
}

fn xxh64_merge(h: u64, acc: u64) -> u64 {
    (h ^ xxh64_round(0, acc)).wrapping_mul(P1).wrapping_add(P4)
}

fn le_u64(bytes: &[u8]) -> u64 {
    u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"))
}

fn le_u32(bytes: &[u8]) -> u32 {
    u32::from_le_bytes(bytes[..4].try_into().expect("4 bytes"))
}

/// XXH64 of `input` with `seed`, as specified at github.com/Cyan4973/xxHash (one-shot form).
fn xxh64(input: &[u8], seed: u64) -> u64 {
    let mut stripes = input.chunks_exact(32);
    let mut h = if input.len() >= 32 {
        let mut v = [
            seed.wrapping_add(P1).wrapping_add(P2),
            seed.wrapping_add(P2),
            seed,
            seed.wrapping_sub(P1),
        ];
        for stripe in &mut stripes {
            for (acc, lane) in v.iter_mut().zip(stripe.chunks_exact(8)) {
                *acc = xxh64_round(*acc, le_u64(lane));
            }
        }
        let h = v[0]
            .rotate_left(1)
            .wrapping_add(v[1].rotate_left(7))
            .wrapping_add(v[2].rotate_left(12))
            .wrapping_add(v[3].rotate_left(18));
        v.iter().fold(h, |h, &acc| xxh64_merge(h, acc))
    } else {
        seed.wrapping_add(P5)
    };
    h = h.wrapping_add(input.len() as u64);
    let mut words = stripes.remainder().chunks_exact(8);
    for word in &mut words {
        h = (h ^ xxh64_round(0, le_u64(word)))
            .rotate_left(27)
            .wrapping_mul(P1)
            .wrapping_add(P4);
    }
    let mut tail = words.remainder();
    if tail.len() >= 4 {
        h = (h ^ u64::from(le_u32(tail)).wrapping_mul(P1))
            .rotate_left(23)
            .wrapping_mul(P2)
            .wrapping_add(P3);
        tail = &tail[4..];
    }
    for &byte in tail {
        h = (h ^ u64::from(byte).wrapping_mul(P5))
            .rotate_left(11)
            .wrapping_mul(P1);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(P2);
    h ^= h >> 29;
    h = h.wrapping_mul(P3);
    h ^ (h >> 32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const CLIENTS: usize = 200;
    const INSTANCES: usize = 50;

    fn instances(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{i}:8080")).collect()
    }

    /// CLIENTS subsetters with seeds drawn as `new` draws them, from a fixed generator.
    fn clients(size: usize) -> Vec<Subsetter> {
        let mut rng = fastrand::Rng::with_seed(0xA68);
        (0..CLIENTS)
            .map(|_| Subsetter::with_seed(size, rng.u64(..)))
            .collect()
    }

    fn chosen<'a>(s: &Subsetter, addrs: &[&'a str]) -> BTreeSet<&'a str> {
        s.select(addrs).into_iter().map(|i| addrs[i]).collect()
    }

    /// mean - z sd and mean + z sd of Binomial(trials, p).
    fn binomial_range(trials: usize, p: f64, z: f64) -> (f64, f64) {
        let mean = trials as f64 * p;
        let sd = (trials as f64 * p * (1.0 - p)).sqrt();
        (mean - z * sd, mean + z * sd)
    }

    #[test]
    fn xxh64_matches_published_vectors() {
        assert_eq!(xxh64(b"", 0), 0xEF46_DB37_51D8_E999);
        assert_eq!(xxh64(b"", 1), 0xD5AF_BA13_36A3_BE4B);
        assert_eq!(xxh64(b"a", 0), 0xD24E_C4F1_A98C_6E5B);
        assert_eq!(xxh64(b"abc", 0), 0x44BC_2CF5_AD77_0999);
        assert_eq!(xxh64(b"1234", 0), 0xD831_6E61_D84F_6BA4);
        assert_eq!(xxh64(b"this is a test", 0xCAFE), 0x4228_C321_5949_E862);
        assert_eq!(
            xxh64(b"12345678901234567890123456789012", 0),
            0x40FD_1AA5_2D98_274C
        );
        assert_eq!(
            xxh64(b"The quick brown fox jumps over the lazy dog", 0),
            0x0B24_2D36_1FDA_71BC
        );
    }

    #[test]
    fn connections_spread_over_the_instances() {
        // A client holds a given instance with p = size/50, so an instance's connection count
        // is Binomial(200, p): mean 4 x size, sd sqrt(200 p (1 - p)). Over 50 instances the
        // extremes sit about 2.3 sd out, so max/min is about (mean + 2.3 sd)/(mean - 2.3 sd):
        //   size  5: 20 +- 4.2 -> ~2.7     size 20:  80 +- 6.9 -> ~1.5
        //   size 10: 40 +- 5.7 -> ~1.9     size 25: 100 +- 7.1 -> ~1.4
        //   size 30: 120 +- 6.9 -> ~1.3
        // Ideal random subsets (3000 simulated fleets a size) stay within max/min <= 1.5 in
        // 0.1% of fleets at size 10, 61% at 20, 95% at 25 and 99.8% at 30: 30 is the smallest
        // size at which 1.5 is a property of the algorithm rather than luck of the seeds.
        const SPREAD_SIZE: usize = 30;
        let owned = instances(INSTANCES);
        let addrs: Vec<&str> = owned.iter().map(String::as_str).collect();
        for size in [5, 10, 20, 25, SPREAD_SIZE] {
            let mut count = [0usize; INSTANCES];
            for s in clients(size) {
                for i in s.select(&addrs) {
                    count[i] += 1;
                }
            }
            let (max, min) = (count.iter().max().unwrap(), count.iter().min().unwrap());
            let ratio = *max as f64 / *min as f64;
            eprintln!(
                "subset size {size}: {CLIENTS} clients over {INSTANCES} instances, \
                 connections {min}..{max}, max/min {ratio:.2}"
            );
            // A non-uniform hash shows as counts far outside the binomial; 4.5 sd out happens
            // by chance about once in 150,000 instances.
            let (lo, hi) = binomial_range(CLIENTS, size as f64 / INSTANCES as f64, 4.5);
            assert!(
                count.iter().all(|&c| (lo..=hi).contains(&(c as f64))),
                "size {size}: counts {count:?} outside {lo:.0}..{hi:.0}"
            );
            if size == SPREAD_SIZE {
                assert!(ratio <= 1.5, "size {size}: max/min {ratio:.2}");
            }
        }
    }

    #[test]
    fn removing_an_instance_replaces_it_and_nothing_else() {
        let owned = instances(INSTANCES);
        let addrs: Vec<&str> = owned.iter().map(String::as_str).collect();
        let subsetters = clients(10);
        for removed in 0..INSTANCES {
            let rest: Vec<&str> = addrs
                .iter()
                .enumerate()
                .filter(|&(i, _)| i != removed)
                .map(|(_, a)| *a)
                .collect();
            for s in &subsetters {
                let (before, after) = (chosen(s, &addrs), chosen(s, &rest));
                if before.contains(addrs[removed]) {
                    let lost: Vec<_> = before.difference(&after).copied().collect();
                    assert_eq!(lost, [addrs[removed]], "{s:?}");
                    assert_eq!(after.difference(&before).count(), 1, "{s:?}");
                } else {
                    assert_eq!(before, after, "{s:?}");
                }
            }
        }
    }

    #[test]
    fn adding_an_instance_moves_few_clients_by_one_each() {
        let size = 10;
        let owned = instances(INSTANCES);
        let addrs: Vec<&str> = owned.iter().map(String::as_str).collect();
        let subsetters = clients(size);
        // A client takes the new instance when it hashes among its lowest `size` of the 51:
        // chance size/51, so the clients that move are Binomial(200, 10/51), about 39 +- 5.6.
        let (lo, hi) = binomial_range(CLIENTS, size as f64 / (INSTANCES + 1) as f64, 5.0);
        for j in 0..10 {
            let added = format!("10.0.1.{j}:8080");
            let mut grown = addrs.clone();
            grown.push(&added);
            let mut moved = 0;
            for s in &subsetters {
                let (before, after) = (chosen(s, &addrs), chosen(s, &grown));
                if before == after {
                    continue;
                }
                moved += 1;
                let gained: Vec<_> = after.difference(&before).copied().collect();
                assert_eq!(gained, [added.as_str()], "{s:?}");
                assert_eq!(before.difference(&after).count(), 1, "{s:?}");
            }
            assert!(
                (lo..=hi).contains(&(moved as f64)),
                "adding {added} moved {moved} of {CLIENTS} clients, expected {lo:.0}..{hi:.0}"
            );
        }
    }

    #[test]
    fn everything_when_size_reaches_the_instance_count() {
        let owned = instances(5);
        let addrs: Vec<&str> = owned.iter().map(String::as_str).collect();
        for size in [5, 6, 100] {
            assert_eq!(
                Subsetter::with_seed(size, 7).select(&addrs),
                [0, 1, 2, 3, 4]
            );
        }
        assert!(Subsetter::with_seed(3, 7).select(&[]).is_empty());
        assert_eq!(Subsetter::with_seed(4, 7).select(&addrs).len(), 4);
    }

    #[test]
    fn the_subset_comes_in_hash_order() {
        let owned = instances(INSTANCES);
        let addrs: Vec<&str> = owned.iter().map(String::as_str).collect();
        let mut firsts = std::collections::HashSet::new();
        for s in clients(10) {
            let picked = s.select(&addrs);
            assert_eq!(picked.len(), 10);
            let hashes: Vec<u64> = picked
                .iter()
                .map(|&i| xxh64(addrs[i].as_bytes(), s.seed))
                .collect();
            assert!(hashes.windows(2).all(|w| w[0] <= w[1]), "{picked:?}");
            firsts.insert(picked[0]);
        }
        // A pick_first child would use the first: it differs between clients.
        assert!(firsts.len() > 1, "{firsts:?}");
    }

    #[test]
    fn the_subset_depends_on_the_set_not_its_order() {
        let owned = instances(INSTANCES);
        let addrs: Vec<&str> = owned.iter().map(String::as_str).collect();
        let mut rng = fastrand::Rng::with_seed(1);
        for s in clients(10) {
            let mut shuffled = addrs.clone();
            rng.shuffle(&mut shuffled);
            assert_eq!(chosen(&s, &addrs), chosen(&s, &shuffled), "{s:?}");
        }
    }

    #[test]
    fn a_fresh_subsetter_keeps_its_size() {
        let s = Subsetter::new(3);
        assert_eq!(s.size(), 3);
        let owned = instances(INSTANCES);
        let addrs: Vec<&str> = owned.iter().map(String::as_str).collect();
        assert_eq!(s.select(&addrs), s.clone().select(&addrs));
        assert_eq!(s.select(&addrs).len(), 3);
    }

    #[test]
    #[should_panic(expected = "subset size must be at least 1")]
    fn zero_size_is_rejected() {
        Subsetter::with_seed(0, 1);
    }
}
