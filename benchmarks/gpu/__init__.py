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
  times it next to its PyTorch peers: eager (NCHW, and channels_last; cuDNN autotuned)
  and torch.compile in modes ``reduce-overhead``, ``default`` and ``max-autotune``; the
  summary gives the ratio against the fastest peer measured.
* ``peers-check`` (any machine, no GPU needed) runs the peer code of ``device`` on the CPU
  on a tiny network, so that it is known to work before a GPU is lent.

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
:mod:`.environment` (CUDA toolkit, NVRTC, importing the carried runtime), :mod:`.bundle`
(the runtime-only copy of TVM, tvm_ffi, Lark and resdsl), :mod:`.build` (compiling the
artifacts), :mod:`.prepare` and :mod:`.device` (the two phases), :mod:`.report` (results
and the summary table), :mod:`.peers_check` (the peers on the CPU), :mod:`.cli` (the
command line).

Modules import only the standard library and NumPy at the top, so ``device`` starts on a
machine without TVM's compiler, Lark or resdsl installed.
"""
