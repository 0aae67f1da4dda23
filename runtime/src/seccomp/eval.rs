//! A classic-BPF interpreter for the instructions seccompiler emits, and the kernel's rule
//! for combining stacked filters: a dry run of a compiled profile without installing it.

use seccompiler::sock_filter;

/// `struct seccomp_data` as the filter sees it (little-endian, as on x86_64 and aarch64).
#[derive(Debug, Clone, Copy)]
pub struct SeccompData {
    pub nr: i32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

impl SeccompData {
    fn load_word(&self, offset: u32) -> Option<u32> {
        let word = |v: u64, high: bool| if high { (v >> 32) as u32 } else { v as u32 };
        match offset {
            0 => Some(self.nr as u32),
            4 => Some(self.arch),
            8 | 12 => Some(word(self.instruction_pointer, offset == 12)),
            16..=60 if offset % 4 == 0 => {
                let arg = ((offset - 16) / 8) as usize;
                Some(word(self.args[arg], (offset - 16) % 8 == 4))
            }
            _ => None,
        }
    }
}

/// Runs one program. `Err` names an instruction the interpreter does not know (seccompiler
/// only emits loads, AND, JA/JEQ/JGT/JGE and RET) or a jump out of the program.
pub fn run(program: &[sock_filter], data: &SeccompData) -> Result<u32, String> {
    const LD_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
    const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
    const JEQ: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JGT: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
    const JGE: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

    let mut acc: u32 = 0;
    let mut pc: usize = 0;
    loop {
        let insn = program
            .get(pc)
            .ok_or_else(|| format!("fell off the program at {pc}"))?;
        let branch = |taken: bool| 1 + usize::from(if taken { insn.jt } else { insn.jf });
        pc += match insn.code {
            LD_ABS => {
                acc = data
                    .load_word(insn.k)
                    .ok_or_else(|| format!("load from bad offset {} at {pc}", insn.k))?;
                1
            }
            AND_K => {
                acc &= insn.k;
                1
            }
            JA => 1 + insn.k as usize,
            JEQ => branch(acc == insn.k),
            JGT => branch(acc > insn.k),
            JGE => branch(acc >= insn.k),
            RET_K => return Ok(insn.k),
            other => return Err(format!("unknown instruction {other:#x} at {pc}")),
        };
    }
}

/// The kernel's verdict over stacked filters given in install order: the action of lowest
/// `(s32)(ret & SECCOMP_RET_ACTION_FULL)` wins (KILL_PROCESS first, ALLOW last); between
/// equal actions the most recently installed filter's return value (its data) is kept.
pub fn combine(results_in_install_order: impl DoubleEndedIterator<Item = u32>) -> u32 {
    let rank = |ret: u32| (ret & libc::SECCOMP_RET_ACTION_FULL) as i32;
    let mut verdict = libc::SECCOMP_RET_ALLOW;
    for ret in results_in_install_order.rev() {
        if rank(ret) < rank(verdict) {
            verdict = ret;
        }
    }
    verdict
}
