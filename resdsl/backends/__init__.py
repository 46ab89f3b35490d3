"""Backends: PyTorch (``torch``), ONNX (``onnx``) and TVM (``tvm``); each imports its library
only when used. What every target shares and the command line checks before importing one
lives here."""

# The largest batch a model is built for (``--batch``, ``BuildOptions.batch``): an artifact
# takes the whole batch as one array (a ResNet's 65,536 inputs alone are 37 GiB) and runs it
# in micro-batches one after another, so a larger batch is no faster than several calls and
# most likely a typo.
MAX_BATCH = 65536
