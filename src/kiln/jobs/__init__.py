"""Compilation jobs as Neo defines them: the job model, its store and the executors.

Never imports tvm: compiles run in subprocesses (``python -m kiln.cli.main compile``).
"""
