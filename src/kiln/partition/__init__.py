"""Accelerator partitioning (Xilinx DPUCZDX8G, TI TIDL): which nodes the accelerator runs and
why not, int8 power-of-two segments, simulated accuracy, and the vendor hand-off folder."""

from kiln.partition.opsets import ACCELERATORS

__all__ = ["ACCELERATORS", "partition_model"]


def partition_model(*args, **kwargs):
    from kiln.partition.handoff import partition_model as run

    return run(*args, **kwargs)
