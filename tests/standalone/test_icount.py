"""Guest instruction counting from qemu-user's debug log (bench/standalone_icount.py's helper):
the log parser on hand-written logs, and both counting modes on a real aarch64 program."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from kiln.bench.icount import count_command, count_guest_insns

# two TBs: A (3 instructions) runs twice, B (2) once; then A is retranslated at the same
# host address after a code-cache flush with 1 instruction and runs once more
LOG = """\
----------------
IN: main
0x0000005500001000:  d503201f  nop
0x0000005500001004:  d280001d  movz     x29, #0
0x0000005500001008:  97ffeeac  bl       #0x5500002000

Trace 0: 0x7f0000000100 [0000000001009331/0000005500001000/00000001/00000200] main
----------------
IN: f
0x0000005500002000:  a9b27bfd  stp      x29, x30, [sp, #-0xe0]!
0x0000005500002004:  d65f03c0  ret

Trace 0: 0x7f0000000200 [0000000001009331/0000005500002000/00000001/00000200] f
Trace 0: 0x7f0000000100 [0000000001009331/0000005500001000/00000001/00000200] main
----------------
IN: main
0x0000005500001000:  d65f03c0  ret

Trace 0: 0x7f0000000100 [0000000001009331/0000005500001000/00000001/00000200] main
"""


def test_sums_each_executed_tb_by_its_listing():
    assert count_guest_insns(LOG.splitlines()) == 3 + 2 + 3 + 1


def test_singlestep_log_counts_one_per_trace():
    lines = [f"Trace 0: 0x7f00000{i:05x} [0/0000005500001000/00000001/00000201] "
             for i in range(7)]
    assert count_guest_insns(lines) == 7


def test_second_guest_thread_is_refused():
    log = LOG + "Trace 1: 0x7f0000000200 [0000000001009331/0000005500002000/0/200] f\n"
    with pytest.raises(ValueError, match="guest thread 1"):
        count_guest_insns(log.splitlines())


SYSROOT = Path("/usr/aarch64-linux-gnu")


@pytest.mark.skipif(shutil.which("qemu-aarch64") is None or not SYSROOT.is_dir(),
                    reason="needs qemu-aarch64 and the arm64 sysroot (scripts/setup-system.sh)")
def test_tb_and_singlestep_modes_agree_on_a_real_program():
    # the aarch64 dynamic loader runs as a program: real guest code, about 19k instructions
    cmd = ["qemu-aarch64", "-L", str(SYSROOT), str(SYSROOT / "lib/ld-linux-aarch64.so.1"),
           "--version"]
    by_tb = count_command(cmd)
    one_per_tb = count_command(cmd, qemu_args=("-singlestep", "-d", "exec,nochain"))
    assert by_tb > 10_000
    assert abs(by_tb - one_per_tb) / one_per_tb < 0.005
