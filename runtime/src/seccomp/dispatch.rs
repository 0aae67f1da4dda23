//! A binary search over syscall-number ranges, put in front of seccompiler's chains for
//! the syscalls a program matches unconditionally.
//!
//! seccompiler tests syscall numbers one after another: 5 instructions per syscall, 2 of
//! them run for every syscall passed over. The default profile's ~300 unconditional allows
//! came to 1,942 instructions, which the kernel converts and JITs on every install (about
//! 0.9 ms per container) and which a syscall late in the list walks on every call. Most of
//! those numbers form runs of consecutive syscalls; as ranges, a syscall is found in
//! log2(ranges) comparisons. Only the syscalls with argument conditions stay in
//! seccompiler's chains, which the search falls through to. No crate generates such a
//! search (libseccomp's binary tree needs the C library), hence this module.

use seccompiler::sock_filter;

/// `offsetof(struct seccomp_data, nr)`.
const NR_OFFSET: u32 = 0;

/// Inclusive ranges of syscall numbers: sorted, disjoint, with a gap between neighbours.
pub(super) fn ranges(mut numbers: Vec<u32>) -> Vec<(u32, u32)> {
    numbers.sort_unstable();
    numbers.dedup();
    let mut out: Vec<(u32, u32)> = Vec::new();
    for nr in numbers {
        match out.last_mut() {
            Some((_, hi)) if hi.checked_add(1) == Some(nr) => *hi = nr,
            _ => out.push((nr, nr)),
        }
    }
    out
}

/// Where a jump goes: `n` instructions past the next one, or one of the two exits.
#[derive(Debug, Clone, Copy)]
enum Target {
    Skip(usize),
    Hit,
    Miss,
}

#[derive(Debug, Clone, Copy)]
struct Jump {
    code: u32,
    k: u32,
    taken: Target,
    not_taken: Target,
}

/// The search as instructions: it loads the syscall number, returns `hit` when the number
/// is in one of `ranges` and otherwise goes on with the instruction after its last one,
/// with the number in the accumulator. Empty for no ranges; `None` when a jump would not
/// fit cBPF's 8-bit offsets (only a profile of thousands of scattered numbers gets there),
/// so the caller keeps seccompiler's chains for all of them.
pub(super) fn search(ranges: &[(u32, u32)], hit: u32) -> Option<Vec<sock_filter>> {
    if ranges.is_empty() {
        return Some(Vec::new());
    }
    let jumps = tree(ranges, false);
    // Layout: LD nr; the jumps; RET hit; (the miss exit is the instruction after that).
    let hit_at = 1 + jumps.len();
    let miss_at = hit_at + 1;
    let mut program = Vec::with_capacity(miss_at);
    program.push(sock_filter {
        code: (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16,
        jt: 0,
        jf: 0,
        k: NR_OFFSET,
    });
    for (i, jump) in jumps.iter().enumerate() {
        let next = 1 + i + 1;
        let offset = |target: Target| -> Option<u8> {
            let skip = match target {
                Target::Skip(n) => n,
                Target::Hit => hit_at - next,
                Target::Miss => miss_at - next,
            };
            u8::try_from(skip).ok()
        };
        program.push(sock_filter {
            code: jump.code as u16,
            jt: offset(jump.taken)?,
            jf: offset(jump.not_taken)?,
            k: jump.k,
        });
    }
    program.push(sock_filter {
        code: (libc::BPF_RET | libc::BPF_K) as u16,
        jt: 0,
        jf: 0,
        k: hit,
    });
    Some(program)
}

/// The comparisons for `ranges`; `above_low` when the number is already known to be at
/// least the first range's low end (the right half of a split).
fn tree(ranges: &[(u32, u32)], above_low: bool) -> Vec<Jump> {
    const JEQ: u32 = libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K;
    const JGT: u32 = libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K;
    const JGE: u32 = libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K;
    let jump = |code, k, taken, not_taken| Jump {
        code,
        k,
        taken,
        not_taken,
    };
    match ranges {
        [] => Vec::new(),
        [(_, hi)] if above_low => vec![jump(JGT, *hi, Target::Miss, Target::Hit)],
        [(lo, hi)] if lo == hi => vec![jump(JEQ, *lo, Target::Hit, Target::Miss)],
        [(lo, hi)] => vec![
            jump(JGE, *lo, Target::Skip(0), Target::Miss),
            jump(JGT, *hi, Target::Miss, Target::Hit),
        ],
        _ => {
            let (left, right) = ranges.split_at(ranges.len() / 2);
            let split = right[0].0;
            let left = tree(left, above_low);
            let right = tree(right, true);
            let mut out = Vec::with_capacity(1 + left.len() + right.len());
            out.push(jump(JGE, split, Target::Skip(left.len()), Target::Skip(0)));
            out.extend(left);
            out.extend(right);
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::eval::{run, SeccompData};

    const HIT: u32 = libc::SECCOMP_RET_ALLOW;
    const MISS: u32 = libc::SECCOMP_RET_ERRNO | 1;

    /// The search followed by `RET MISS`, as the fall-through into seccompiler's chains.
    fn verdicts(ranges: &[(u32, u32)], upto: u32) -> Vec<bool> {
        let mut program = search(ranges, HIT).unwrap();
        program.push(sock_filter {
            code: (libc::BPF_RET | libc::BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: MISS,
        });
        (0..=upto)
            .chain([u32::MAX, 0x4000_0000])
            .map(|nr| {
                let data = SeccompData {
                    nr: nr as i32,
                    arch: 0,
                    instruction_pointer: 0,
                    args: [0; 6],
                };
                match run(&program, &data).unwrap() {
                    HIT => true,
                    MISS => false,
                    other => panic!("nr {nr}: {other:#x}"),
                }
            })
            .collect()
    }

    #[test]
    fn runs_of_numbers_become_ranges() {
        assert_eq!(
            ranges(vec![5, 1, 2, 3, 9, 3, 10, 0]),
            [(0, 3), (5, 5), (9, 10)]
        );
        assert_eq!(
            ranges(vec![u32::MAX, u32::MAX - 1]),
            [(u32::MAX - 1, u32::MAX)]
        );
        assert!(ranges(Vec::new()).is_empty());
    }

    #[test]
    fn hits_exactly_the_numbers_in_the_ranges() {
        let sets: [&[u32]; 6] = [
            &[],
            &[0],
            &[7],
            &[0, 1, 2, 3, 200],
            &[1, 3, 5, 7, 9, 11, 13, 100, 101, 102, 400],
            &[
                2, 4, 5, 6, 8, 20, 21, 22, 23, 50, 60, 61, 62, 70, 71, 80, 90, 91, 300, 301,
            ],
        ];
        for numbers in sets {
            let r = ranges(numbers.to_vec());
            let got = verdicts(&r, 512);
            for (nr, hit) in got.iter().take(513).enumerate() {
                assert_eq!(*hit, numbers.contains(&(nr as u32)), "{numbers:?}: nr {nr}");
            }
            assert!(
                !got[513] && !got[514],
                "{numbers:?}: -1 or an x32 number hit"
            );
        }
    }

    #[test]
    fn every_second_number_up_to_a_limit_is_found_in_few_comparisons() {
        let numbers: Vec<u32> = (0..200).step_by(2).collect();
        let r = ranges(numbers.clone());
        let program = search(&r, HIT).unwrap();
        // 100 single numbers: 99 splits and 100 one-comparison leaves (the search knows
        // each leaf's low end but the first's), against 500 for seccompiler's chains.
        assert_eq!(program.len(), 1 + 99 + 100 + 1);
        let got = verdicts(&r, 201);
        for (nr, hit) in got.iter().take(202).enumerate() {
            assert_eq!(*hit, nr < 200 && nr % 2 == 0, "nr {nr}");
        }
    }

    #[test]
    fn too_far_a_jump_gives_none() {
        let numbers: Vec<u32> = (0..2000).step_by(2).collect();
        assert!(search(&ranges(numbers), HIT).is_none());
    }
}
