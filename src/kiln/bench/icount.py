"""Count the guest instructions a program executes under qemu-user, without TCG plugins.

qemu-user 7.2 (Debian 12) ships no ``libinsn.so``, but its debug log is enough:
``-d in_asm,exec,nochain`` prints every translation block (TB) once when it is translated
(``IN:`` followed by one ``0x<pc>:  <insn>`` line per guest instruction) and a ``Trace`` line
each time a TB is executed (``nochain`` sends every TB through the logging dispatcher instead of
jumping straight from one TB to the next). The number of guest instructions executed is then
the sum over ``Trace`` lines of the size of that TB. A TB is identified by its host code
address (the ``Trace N: 0x<host>`` field): unique per translation, reassigned when qemu flushes
its code cache, and always traced right after its ``IN:`` listing (with ``nochain`` a freshly
translated TB is executed next), so this works for one guest thread. Exact except when an
instruction faults in the middle of a TB (the rest of that TB is still counted); a program
with several guest threads interleaves their traces, so run single-threaded.

``-singlestep`` (qemu >= 8.1: ``-one-insn-per-tb``) with ``-d exec,nochain`` gives one ``Trace``
line per instruction instead, about 10x slower; :func:`count_guest_insns` counts both logs.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from collections.abc import Iterable, Sequence

_TRACE = re.compile(r"Trace (\d+): (0x[0-9a-f]+) ")
_INSN = re.compile(r"0x[0-9a-f]+:  ")


def count_guest_insns(lines: Iterable[str]) -> int:
    """Guest instructions executed, from a qemu ``-d in_asm,exec,nochain`` log (see module doc).

    A ``Trace`` line whose TB had no ``IN:`` listing counts 1 (the ``-singlestep`` log, where
    every TB is one instruction and ``in_asm`` is not asked for). Raises ``ValueError`` when
    the log shows a second guest thread (their traces interleave; count single-threaded runs).
    """
    sizes: dict[str, int] = {}
    listing: int | None = None  # instructions of the TB being listed, None outside a listing
    total = 0
    for line in lines:
        if line.startswith("Trace "):
            m = _TRACE.match(line)
            if m is None:
                continue
            if m.group(1) != "0":
                raise ValueError(f"guest thread {m.group(1)} in the log: count one thread only")
            if listing is not None:  # the TB just listed runs first: bind its size
                sizes[m.group(2)] = listing
                listing = None
            total += sizes.get(m.group(2), 1)
        elif line.startswith("IN:"):
            listing = 0
        elif listing is not None and _INSN.match(line):
            listing += 1
    return total


def count_command(cmd: Sequence[str], env: dict[str, str] | None = None,
                  qemu_args: Sequence[str] = ("-d", "in_asm,exec,nochain")) -> int:
    """Run ``cmd`` (``[qemu-<arch>, -L, sysroot, program, args...]``) with qemu's log streamed
    through a pipe into :func:`count_guest_insns` (logs reach gigabytes; nothing is stored).
    Raises ``RuntimeError`` when the program fails, ``ValueError`` when it ran several threads."""
    read_fd, write_fd = os.pipe()
    result: list = []

    def read(log) -> None:
        try:
            result.append(count_guest_insns(log))
        except ValueError as exc:
            result.append(exc)
            for _ in log:  # keep draining, or qemu blocks on a full pipe
                pass

    with os.fdopen(read_fd, "r", errors="replace") as log:
        reader = threading.Thread(target=read, args=(log,))
        reader.start()
        try:
            proc = subprocess.run([cmd[0], *qemu_args, "-D", f"/dev/fd/{write_fd}", *cmd[1:]],
                                  pass_fds=(write_fd,), env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE, text=True)
        finally:
            os.close(write_fd)
            reader.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... failed ({proc.returncode}): "
                           f"{proc.stderr.strip()[-500:]}")
    if isinstance(result[0], ValueError):
        raise result[0]
    return result[0]
