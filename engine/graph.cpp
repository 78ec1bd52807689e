// CudaGraph: stream capture into a private memory pool, instantiation, replay.
#include "engine/graph.h"

#include <stdexcept>
#include <vector>
#include <string>

#if RETORT_WITH_CUDA
#include <cuda_runtime.h>

#include "engine/cuda/runtime.h"
#include "kernels/cuda/check.h"
#include "kernels/cuda/context.h"
#endif

namespace retort {

#if RETORT_WITH_CUDA
struct CudaGraph::Impl {
  int device = 0;
  cudaGraph_t graph = nullptr;
  cudaGraphExec_t exec = nullptr;
  uint64_t pool = 0;
  void reset() noexcept {
    if (exec != nullptr) (void)cudaGraphExecDestroy(exec);
    if (graph != nullptr) (void)cudaGraphDestroy(graph);
    exec = nullptr;
    graph = nullptr;
    if (pool != 0) cuda::release_graph_pool(device, pool);
    pool = 0;
  }
  ~Impl() { reset(); }
};
#else
struct CudaGraph::Impl {};
#endif

CudaGraph::CudaGraph(Device device) : device_(device), impl_(std::make_unique<Impl>()) {
  if (!device.is_cuda()) {
    throw std::invalid_argument("CudaGraph needs a CUDA device, got " + device.str());
  }
  require_available(device);
}

CudaGraph::~CudaGraph() = default;

bool CudaGraph::captured() const {
#if RETORT_WITH_CUDA
  return impl_->exec != nullptr;
#else
  return false;
#endif
}

void CudaGraph::capture(const std::function<void()>& fn) {
#if RETORT_WITH_CUDA
  Impl& g = *impl_;
  g.reset();
  g.device = device_.index;
  const cudaStream_t stream = cuda::context(device_.index).stream;
  synchronize(device_);  // nothing from before the capture may still be running into it
  g.pool = cuda::begin_graph_pool(device_.index);
  // Relaxed: the caching allocator may call cudaMalloc for the pool while capturing.
  cudaError_t begin = cudaStreamBeginCapture(stream, cudaStreamCaptureModeRelaxed);
  if (begin != cudaSuccess) {
    cuda::end_graph_pool(device_.index);
    g.reset();
    throw std::runtime_error(std::string("CUDA graph capture could not start: ") +
                             cudaGetErrorString(begin));
  }
  try {
    fn();
  } catch (...) {
    cudaGraph_t partial = nullptr;
    (void)cudaStreamEndCapture(stream, &partial);
    if (partial != nullptr) (void)cudaGraphDestroy(partial);
    (void)cudaGetLastError();
    cuda::end_graph_pool(device_.index);
    g.reset();
    throw;
  }
  const cudaError_t end = cudaStreamEndCapture(stream, &g.graph);
  cuda::end_graph_pool(device_.index);
  if (end != cudaSuccess || g.graph == nullptr) {
    (void)cudaGetLastError();
    g.reset();
    throw std::runtime_error(std::string("CUDA graph capture failed: ") + cudaGetErrorString(end) +
                             " (did the captured code synchronise or use another stream?)");
  }
  const cudaError_t inst = cudaGraphInstantiate(&g.exec, g.graph, 0);
  if (inst != cudaSuccess) {
    (void)cudaGetLastError();
    g.reset();
    throw std::runtime_error(std::string("CUDA graph instantiation failed: ") +
                             cudaGetErrorString(inst));
  }
#else
  (void)fn;
  throw std::runtime_error("CUDA graphs need a retort built with CUDA");
#endif
}

int64_t CudaGraph::kernel_count() const {
#if RETORT_WITH_CUDA
  if (impl_->graph == nullptr) return -1;
  size_t count = 0;
  RETORT_CUDA_CHECK(cudaGraphGetNodes(impl_->graph, nullptr, &count));
  std::vector<cudaGraphNode_t> nodes(count);
  if (count > 0) RETORT_CUDA_CHECK(cudaGraphGetNodes(impl_->graph, nodes.data(), &count));
  int64_t kernels = 0;
  for (cudaGraphNode_t node : nodes) {
    cudaGraphNodeType type{};
    RETORT_CUDA_CHECK(cudaGraphNodeGetType(node, &type));
    kernels += type == cudaGraphNodeTypeKernel;
  }
  return kernels;
#else
  return -1;
#endif
}

void CudaGraph::replay() {
#if RETORT_WITH_CUDA
  if (impl_->exec == nullptr) throw std::logic_error("CudaGraph::replay before a capture");
  RETORT_CUDA_CHECK(cudaGraphLaunch(impl_->exec, cuda::context(device_.index).stream));
#else
  throw std::logic_error("CudaGraph::replay before a capture");
#endif
}

}  // namespace retort
