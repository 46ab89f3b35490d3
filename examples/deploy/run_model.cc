// Run a resdsl CPU artifact with TVM's runtime alone.
//
//   run_model DIR BATCH [INPUT.bin [OUTPUT.bin]]
//
// DIR holds model.so and model.json (resdsl compile --target llvm -o DIR). The input is
// BATCH samples of the model's first input as raw float32 (C order); without INPUT.bin the
// values are i * 0.001 (mod 1). The first output is written to OUTPUT.bin as raw float32, or
// summarised on stdout. A dynamic-batch artifact (compile --batch LOW..HIGH) takes any BATCH
// in its range; a fixed one only its own batch. Exit status 0 on success, 1 on any error
// (the message is on stderr).
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/map.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace ffi = tvm::ffi;
namespace json = tvm::ffi::json;

namespace {

// Host memory for an input tensor, aligned as TVM's kernels expect (64 bytes).
struct AlignedAlloc {
  void AllocData(DLTensor* tensor) {
    size_t bytes = (ffi::GetDataSize(*tensor) + 63) / 64 * 64;
    tensor->data = std::aligned_alloc(64, bytes ? bytes : 64);
    if (tensor->data == nullptr) throw std::bad_alloc();
  }
  void FreeData(DLTensor* tensor) { std::free(tensor->data); }
};

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

// The first input of model.json at BATCH: its shape with "batch" (or the fixed batch) set,
// after checking that the artifact takes this batch.
std::vector<int64_t> InputShape(const json::Object& meta, int64_t batch) {
  if (meta.at("dtype").cast<ffi::String>() != "float32")
    throw std::runtime_error("this example feeds float32 inputs; the artifact is not float32");
  if (meta.at("device").cast<ffi::String>() != "cpu")
    throw std::runtime_error("this example runs CPU (llvm) artifacts");
  auto input = meta.at("inputs").cast<json::Array>()[0].cast<json::Object>();
  auto dims = input.at("shape").cast<json::Array>();
  std::vector<int64_t> shape;
  for (const ffi::Any& d : dims) {
    if (auto name = d.as<ffi::String>()) {  // "batch": a dynamic-batch artifact
      auto range = meta.at("batch_range").cast<json::Array>();
      int64_t low = range[0].cast<int64_t>(), high = range[1].cast<int64_t>();
      if (batch < low || batch > high)
        throw std::runtime_error("this artifact takes batches from " + std::to_string(low) +
                                 " to " + std::to_string(high));
      shape.push_back(batch);
    } else {
      shape.push_back(d.cast<int64_t>());
    }
  }
  if (shape[0] != batch)
    throw std::runtime_error("this artifact was compiled for batch " + std::to_string(shape[0]));
  return shape;
}

int Run(int argc, char** argv) {
  if (argc < 3 || argc > 5) {
    std::cerr << "usage: run_model DIR BATCH [INPUT.bin [OUTPUT.bin]]\n";
    return 1;
  }
  const std::string dir = argv[1];
  const int64_t batch = std::stoll(argv[2]);
  ffi::String error;
  json::Value parsed = json::Parse(ReadFile(dir + "/model.json"), &error);
  if (!error.empty()) throw std::runtime_error("model.json: " + std::string(error));
  auto meta = parsed.cast<json::Object>();
  std::vector<int64_t> shape = InputShape(meta, batch);

  // The library holds a Relax VM executable: load it, give it the CPU with a pooled
  // allocator (kDLCPU = 1, device 0, allocator 2), and take its "main".
  ffi::Module library = ffi::Module::LoadFromFile(dir + "/" + std::string(meta.at("library").cast<ffi::String>()));
  ffi::Module vm = library->GetFunction("vm_load_executable").value()().cast<ffi::Module>();
  vm->GetFunction("vm_initialization").value()(static_cast<int>(kDLCPU), 0, 2);
  ffi::Function main_fn = vm->GetFunction("main").value();

  DLDevice cpu{kDLCPU, 0};
  DLDataType f32{kDLFloat, 32, 1};
  ffi::Tensor x = ffi::Tensor::FromNDAlloc(AlignedAlloc(), ffi::Shape(shape), f32, cpu);
  int64_t elements = 1;
  for (int64_t d : shape) elements *= d;
  std::vector<float> values(elements);
  if (argc >= 4) {
    std::string bytes = ReadFile(argv[3]);
    if (bytes.size() != values.size() * sizeof(float))
      throw std::runtime_error(std::string(argv[3]) + " holds " + std::to_string(bytes.size()) +
                               " bytes; the input needs " + std::to_string(values.size() * 4));
    std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(values.data()));
  } else {
    for (int64_t i = 0; i < elements; ++i) values[i] = static_cast<float>((i % 1000) * 0.001);
  }
  std::memcpy(x.data_ptr(), values.data(), values.size() * sizeof(float));

  ffi::Any result = main_fn(x);
  // one output is a tensor; several come back as an array, whose first one is written
  ffi::Tensor y = result.as<ffi::Tensor>() ? result.cast<ffi::Tensor>()
                                           : result.cast<ffi::Array<ffi::Any>>()[0].cast<ffi::Tensor>();
  if (!y.IsContiguous() || y.dtype().code != kDLFloat || y.dtype().bits != 32)
    throw std::runtime_error("the first output is not a contiguous float32 tensor");
  int64_t out_elements = 1;
  std::ostringstream dims;
  for (int i = 0; i < y.ndim(); ++i) {
    out_elements *= y.shape()[i];
    dims << (i ? ", " : "") << y.shape()[i];
  }
  std::vector<float> out(out_elements);
  std::memcpy(out.data(), static_cast<const char*>(y.data_ptr()) + y.byte_offset(),
              out.size() * sizeof(float));
  if (argc == 5) {
    std::ofstream file(argv[4], std::ios::binary);
    file.write(reinterpret_cast<const char*>(out.data()), out.size() * sizeof(float));
    if (!file) throw std::runtime_error(std::string("cannot write ") + argv[4]);
    std::cerr << "wrote " << argv[4] << " (" << dims.str() << ")\n";
  } else {
    double sum = 0;
    for (float v : out) sum += v;
    std::cout << "output: shape (" << dims.str() << ") mean " << sum / out_elements << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return Run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "run_model: " << e.what() << "\n";
    return 1;
  }
}
