"""The GPU check of resdsl's CUDA artifacts: parity with a PyTorch reference, and latency.

Run through ``benchmarks/gpu_check.sh`` (``prepare`` / ``run``), which runs this package
(``python benchmarks/gpu prepare|device``). Two phases on two machines:

* ``prepare`` (the build machine, no GPU needed) compiles the CUDA artifacts, checks that
  their kernels compile with NVRTC, cuts the weights out of each ``model.so`` (they are
  re-derived from a seed on the GPU side), assembles a runtime-only TVM plus resdsl into
  ``BUNDLE/pylib`` and tests all of that on the CPU: the same ``device`` code, run on llvm
  artifacts in a subprocess that imports only the bundle.
* ``device`` (the GPU machine, with the bundle on ``PYTHONPATH``) rebuilds each artifact
  byte for byte, loads it with ``resdsl.runtime``, checks it against the reference and
  times it next to PyTorch's peers: eager in channels_last with cuDNN autotuned, that
  eager model captured as a CUDA graph, and torch.compile (``max-autotune`` by default) in
  subprocesses bounded by ``--deadline``; the summary gives the ratio against the fastest
  peer measured, issue 20's target met or not, and the achieved TFLOP/s against the GPU's
  datasheet peak. The measurements go most important first (``settings.CONFIGS``' order,
  cheap peers before torch.compile), so a run cut by its deadline keeps what matters.
* ``dry-run`` (any machine, no GPU needed; ``bash benchmarks/gpu_check.sh --dry-run``)
  checks everything of ``device`` that needs no GPU: the options and time budget, the
  configurations, the seeded references (strict loads, spec == torchvision on the CPU), the
  bundle and its carry size, the rebuild, the peer code on a tiny network and the report
  on made-up times; exit status 0 when all is in order (:mod:`.dryrun`).
* ``peers-check`` (any machine, no GPU needed) runs the peer code of ``device`` on the CPU
  on a tiny network, so that it is known to work before a GPU is lent (part of
  ``dry-run``).

What it needs
-------------
The build machine: Python with TVM (the full package, compiler included: apache-tvm 0.27),
apache-tvm-ffi, Lark, NumPy, PyTorch and torchvision (CPU builds are enough) and resdsl's
checkout; the CUDA headers and ``cuda-bindings`` for the NVRTC check (skipped without
them); either a cached apache-tvm-ffi wheel for the GPU machine's CPython or ``pip
download`` access to fetch one; and disk for ``build/`` (the artifacts compile to a few
hundred MB in a temporary folder before they are cut down).

The GPU machine: an NVIDIA GPU of the architecture the artifacts were compiled for
(``prepare --arch``, default sm_90) and its driver; CPython of the version given to
``prepare --device-python``; PyTorch with CUDA (it brings the CUDA runtime, libcudart)
and torchvision; NumPy; and, to compile the kernels when an artifact is loaded, either
``cuda-bindings`` (NVRTC) with the CUDA headers or ``nvcc``. Nothing of resdsl, TVM or
Lark: the bundle carries them. Disk: the bundle, plus the rebuilt ``model.so`` files in a
temporary folder (the full weights of every artifact).

The modules, by phase: :mod:`.settings` (what is built, defaults), :mod:`.weights` (seeded
weights and inputs), :mod:`.skeleton` (cutting weights out and back in),
:mod:`.environment` (CUDA toolkit, NVRTC, importing the carried runtime), :mod:`.kernels`
(the artifacts' CUDA kernels compiled in parallel before they load), :mod:`.bundle`
(the runtime-only copy of TVM, tvm_ffi, Lark and resdsl), :mod:`.build` (compiling the
artifacts), :mod:`.prepare` and :mod:`.device` (the two phases), :mod:`.report` (results
and the summary table: ratios, targets, TFLOP/s), :mod:`.peers_check` (the peers on the
CPU), :mod:`.dryrun` (the no-GPU check of the device run), :mod:`.cli` (the command line).

Modules import only the standard library and NumPy at the top, so ``device`` starts on a
machine without TVM's compiler, Lark or resdsl installed.
"""
