"""Kiln's standalone executor: run a static-shape model with no TVM runtime on the device.

``lower.py`` (the only module here that imports tvm) builds the kernels and the plan,
``plan.py`` walks the memory-planned Relax program, ``runtime.py`` builds the C runtime
(``native/kiln_standalone_runtime.c``) and writes the bundle.
"""
