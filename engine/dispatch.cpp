// Op support queries, the CPU context and the unsupported-op error.
#include "engine/dispatch.h"

namespace retort {
namespace {
kernels::CpuContext& mutable_cpu_context() {
  static kernels::CpuContext ctx;
  return ctx;
}
}  // namespace

bool supports(OpId op, const Device& device) {
  const OpInfo& info = op_info(op);
  if (device.is_cpu()) return info.cpu;
  return info.cuda && cuda_compiled();
}

const kernels::CpuContext& cpu_context() { return mutable_cpu_context(); }

void set_num_threads(int threads) {
  if (threads < 0) throw std::invalid_argument("set_num_threads: threads must be >= 0");
  mutable_cpu_context().num_threads = threads;
}

void throw_unsupported(OpId op, const Device& device, DType dtype) {
  const OpInfo& info = op_info(op);
  std::string why;
  if (device.is_cuda() && !info.cuda) {
    why = "it has no CUDA kernel";
  } else if (device.is_cuda() && !cuda_compiled()) {
    why = "this retort was built without CUDA";
  } else {
    why = "dtype " + std::string(dtype_name(dtype)) + " is not supported there" +
          (device.is_cuda() ? " (CUDA kernels take f32)" : " (CPU kernels take f32 and f64)");
  }
  throw std::invalid_argument("op '" + std::string(info.name) + "' cannot run on " +
                              device.str() + ": " + why);
}

}  // namespace retort
